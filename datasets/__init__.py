"""The data Starling loads: edge lists, story files, the demo world and the real Reddit threads.

Readers turn files of ``../shared/data`` (or a user's own) into rows and
write them through the :class:`~stores.graph.GraphStore` port; nothing here
is a backend. Blocking file I/O: call these from a worker thread.
"""
