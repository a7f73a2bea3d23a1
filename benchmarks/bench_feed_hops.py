"""Where retrieval's time goes inside a served feed: the user tower, the shard search, the Serve hop, serialisation.

    python benchmarks/bench_feed_hops.py --address <Ray address> --data-dir DIR [--viewers 200] [--k 1000]

Run beside a served app (``xserve serve`` says its Ray address on stderr),
with nothing else driving it. For ``--viewers`` viewers (ids 1..N, each one's
context window read once from the user store, untimed, by the call and with the
trim block the feed uses), one after another, it times:

* ``hops.encode_user_ms``: the user tower for one request, in this process
  (the towers of the data directory, as the Retrieval replica loads them);
* ``hops.shard_search_ms``: one call to each retrieval shard actor, in parallel,
  with the vector and that shard's quota (what the replica's fan-out sends);
* ``hops.serve_retrieve_ms``: the Retrieval deployment through its Serve handle
  (``retrieve_hits``: batch wait, user tower, fan-out, merge; NumPy arrays back);
* ``hops.serve_retrieve_structs_ms``: the same through ``retrieve`` (a list of
  ``RetrievedPost`` Structs back, as the ingress asked before issue 16);
* ``hops.pickle_structs_ms`` / ``hops.pickle_hits_ms``: a pickle round trip of one
  answer as Structs / as arrays, in this process.

Each line is a median over the viewers; the four calls alternate per viewer,
so they see the same load.
"""

from __future__ import annotations

import argparse
import os
import pickle
import socket
import statistics
import sys
import time
from pathlib import Path

import asyncio

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xserve import clock  # noqa: E402
from xserve.actors.naming import NAMESPACE, ActorNames  # noqa: E402
from xserve.config import load_config  # noqa: E402
from xserve.deployments.clients import UserStoreClient  # noqa: E402
from xserve.retrieval.encoders import load_encoders  # noqa: E402
from xserve.retrieval.merge import shard_quota  # noqa: E402
from xserve.schema import RetrievalRequest  # noqa: E402
from xserve.synth.bootstrap import with_models  # noqa: E402


def timed_ms(fn) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return (time.perf_counter() - started) * 1000, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, help="the app's Ray address (xserve serve prints it)")
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--viewers", type=int, default=200)
    p.add_argument("--k", type=int, default=0, help="posts per retrieval (default: mixer.retrieval_max_results)")
    p.add_argument("--app", default="default", help="the Serve application's name")
    args = p.parse_args(argv)
    host, _, port = args.address.rpartition(":")
    try:  # Ray itself retries an unreachable address for minutes
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError):
        p.error(f"no Ray answers at {args.address}: start the app first (`xserve serve` prints its Ray address)")
    # the app's `ray.init()` turns Ray's token auth on (the token in ~/.ray/auth_token); a driver joining it must
    # use it too, and Ray reads the mode once, before this process first connects (as scripts/chaos.py does)
    os.environ.setdefault("RAY_AUTH_MODE", "token")

    import ray
    from ray import serve

    config = with_models(load_config(overrides={"storage": {"data_dir": str(args.data_dir.resolve())}}))
    rcfg = config.retrieval
    k = args.k or config.mixer.retrieval_max_results
    encoder, _, _ = load_encoders(rcfg)
    ray.init(address=args.address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
    names = ActorNames.of(str(args.data_dir.resolve()))
    n_users = config.serving.num_user_shards
    users = UserStoreClient([ray.get_actor(names.user_shard(i, n_users), namespace=NAMESPACE) for i in range(n_users)],
                            config.mixer.history_length, trim_block=config.mixer.history_trim_block)

    async def windows() -> dict[int, tuple]:  # the history each viewer's feed gives the towers
        found = await asyncio.gather(*(users.query_data(v) for v in range(1, args.viewers + 1)))
        return {d.user_id: d.history for d in found if d is not None}

    histories = asyncio.run(windows())
    shards = [ray.get_actor(names.retrieval_shard(i), namespace=NAMESPACE) for i in range(rcfg.num_shards)]
    quota = shard_quota(k, rcfg.num_shards, rcfg.shard_quota_sigmas)
    handle = serve.get_deployment_handle("Retrieval", args.app)
    try:
        handle.retrieve_hits.remote(RetrievalRequest(user_id=1, history=(), max_results=1)).result()
        has_hits = True
    except Exception:  # noqa: BLE001 - the method does not exist there
        has_hits = False
    out: dict[str, list[float]] = {n: [] for n in ("encode_user", "shard_search", "serve_retrieve",
                                                    "serve_retrieve_structs", "pickle_structs", "pickle_hits")}
    for viewer, history in histories.items():
        now = clock.now_ms()
        req = RetrievalRequest(user_id=viewer, history=history, max_results=k, now_ms=now)
        ms, vectors = timed_ms(lambda: encoder.encode_users([req]))
        out["encode_user"].append(ms)
        vector = np.asarray(vectors)[0]
        ms, _ = timed_ms(lambda: ray.get([s.search.remote(vector, quota, now) for s in shards]))
        out["shard_search"].append(ms)
        if has_hits:  # an app of before issue 16 has only `retrieve`
            ms, hits = timed_ms(lambda: handle.retrieve_hits.remote(req).result())
            out["serve_retrieve"].append(ms)
            out["pickle_hits"].append(timed_ms(lambda: pickle.loads(pickle.dumps(hits)))[0])
        ms, posts = timed_ms(lambda: handle.retrieve.remote(req).result())
        out["serve_retrieve_structs"].append(ms)
        out["pickle_structs"].append(timed_ms(lambda: pickle.loads(pickle.dumps(posts)))[0])
    print(f"hops.viewers {len(histories)} viewers")
    print(f"hops.k {k} posts")
    for name, values in out.items():
        if values:
            print(f"hops.{name}_ms {statistics.median(values):.2f} ms")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
