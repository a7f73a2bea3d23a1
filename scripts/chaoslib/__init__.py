"""The parts of ``scripts/chaos.py`` (the command line and what it does are described there).

* ``load`` -- the load loop and the record of every request it sent;
* ``probes`` -- one round of the probe viewers' feeds;
* ``state`` -- the baseline snapshot and how a later read is compared with it;
* ``results`` -- what one fault measured, from the load's records;
* ``report`` -- the ``name value unit`` lines, the table, and progress lines.
"""
