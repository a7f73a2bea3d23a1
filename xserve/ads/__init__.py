"""Ads blended into the organic feed (issue 17 item 5): the inventory with its pacing counters (``inventory``),
its durable store (``store``), targeting (``targeting``) and the blender's spacing rules (``blender``).

Every class here is pure (no Ray); the actor is :mod:`xserve.actors.ads`, the pipeline stages are
:mod:`xserve.mixer.ads`. ``docs/mixer.md`` ("Ads") describes the whole path.
"""

from xserve.ads.blender import AdBlender, AdSpacing
from xserve.ads.inventory import AdInventory, AdRefused
from xserve.ads.targeting import AdTargeter, ViewerTargeting

# the durable store (xserve.ads.store) is imported where it is opened, so the mixer never loads the event log
__all__ = ["AdBlender", "AdInventory", "AdRefused", "AdSpacing", "AdTargeter", "ViewerTargeting"]
