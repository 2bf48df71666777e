"""Child process for the crash test: flips one hash between two states until killed.

``python redis_crash_child.py URL`` prints ``A`` or ``B`` (flushed) after each applied batch.
The parent loads this file as a module to get :func:`states`.
"""

from __future__ import annotations

import sys

N = 5000


def states() -> tuple[dict[str, bytes], dict[str, bytes]]:
    """State A, and state B = A with a third of the keys deleted, a third changed, some added."""
    a = {f"IMSI{i:015d}": f"A {i} ".encode() * 20 for i in range(N)}
    b = {k: v for i, (k, v) in enumerate(a.items()) if i % 3 != 0}
    for i, k in enumerate(list(b)):
        if i % 2:
            b[k] = f"B {k} ".encode() * 20
    b.update({f"new-{i}": b"B new" for i in range(N // 3)})
    return a, b


def main() -> None:
    from streamer_redis import create_listeners

    from streamer.proto.streamer_pb2 import DataUpdate, DataUpdateBatch

    a, b = states()
    resync_a = DataUpdateBatch(
        updates=[DataUpdate(key=k, value=v) for k, v in a.items()], resync=True
    )
    changes = {k: b.get(k, b"") for k in (*a, *b) if a.get(k) != b.get(k)}
    a_to_b = DataUpdateBatch(updates=[DataUpdate(key=k, value=v) for k, v in changes.items()])
    (listener,) = create_listeners({"streams": ["crash"], "url": sys.argv[1]})
    while True:
        listener.update(resync_a)
        print("A", flush=True)
        listener.update(a_to_b)
        print("B", flush=True)


if __name__ == "__main__":
    main()
