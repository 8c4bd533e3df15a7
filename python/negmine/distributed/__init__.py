"""Mining on a Ray cluster (``pip install 'negmine[ray]'``), with the result of one process,
bit for bit: :func:`mine`; and embedding texts on one, into the file one process writes:
:func:`embed_texts` (actors writing chunks into one file on a shared file system).

Two ways to split the work:

- ``shard_by="query"`` (every node can map the corpus): a pool of actors, each opening the
  corpus once (the driver's ``.npy`` file at the same absolute path on every node, mapped and
  checked to hold the driver's content; or an in-memory array put once into the object
  store) and mining chunks of queries. A chunk carries its global offset, so
  the core's seeded sampling (seeded per global query index) draws what one process draws.
- ``shard_by="corpus"`` (the corpus is too large for one node's memory): one actor per range
  of corpus rows, each searching only its rows with the query's exclusions that fall in them.
  The driver runs the core on each query chunk with a ``fetch`` that asks every shard for its
  top ``depth`` and merges them exactly (:func:`negmine.merge_topk`, the order of
  :func:`negmine.search`): the merged list *is* the exact top ``depth`` of the whole corpus,
  which the core rescores with its float32 chain, filters and samples as on one machine. When
  the filters starve a query's window, the core fetches again, deeper, and the shards are
  asked again. The driver maps the corpus too: it reads the rows of the candidates it
  rescores and of the positives (plus, with ``duplicates="auto"``, every row once to hash
  them; pass ``duplicates=None`` or an array of groups to avoid that).

A corpus file is digested once by the driver and once by each actor that maps it (whole up to
1 GiB, sampled blocks above, as :mod:`negmine._digest` does for files): a node that maps
another file at that path, or none, stops the run with an error naming the file, the actor
and the node.

Both write, with ``out=``, the checkpointed output directory of :mod:`negmine.checkpoint`
(chunk files, manifest, lock, atomic result): a run whose driver died resumes from the chunks
written, and a worker killed mid-run is restarted by Ray (``max_restarts``) and its task
retried, with the same output.

Why an actor pool and not Ray Data ``map_batches``: the checkpoint's unit is a chunk of
queries with a fixed start (the file name, the resume point and the seed offset), and the
driver must write each chunk atomically as it finishes and skip those already on disk. Ray
Data re-blocks its batches, hides which rows a batch held once it is written, and its
fault tolerance re-executes a lost block from lineage rather than letting the driver keep what
it has; an actor pool with one task per chunk keeps the chunk boundaries, resumes trivially
and retries a task on a restarted actor (``max_task_retries``).

Nothing else in negmine imports ``ray``; it is imported when one of these functions runs.

The package, by job: :mod:`~negmine.distributed.plan` (the arguments checked and the split
planned, before Ray starts), :mod:`~negmine.distributed.inputs` (what the actors open and how
it reaches them), :mod:`~negmine.distributed.actors` (the actor pools and their actors),
:mod:`~negmine.distributed.mining` (:func:`mine`), :mod:`~negmine.distributed.searching`
(:func:`search`) and :mod:`~negmine.distributed.embedding` (:func:`embed_texts`).
"""

from __future__ import annotations

from negmine.distributed.actors import ACTOR_PREFIX
from negmine.distributed.embedding import embed_texts
from negmine.distributed.mining import mine
from negmine.distributed.plan import NAMES, ShardBy
from negmine.distributed.searching import search

__all__ = ["ACTOR_PREFIX", "NAMES", "ShardBy", "embed_texts", "mine", "search"]
