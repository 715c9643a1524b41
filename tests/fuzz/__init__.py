"""The fuzz suite (issue 14): garbage thrown at every door that takes outside input.

``POST /rpc`` and raw HTTP, ``GET /ws`` frame by frame, the sans-I/O session, the
``starling load`` readers and command, and the realtime stream's entries. Each test
draws its cases from hypothesis and from a corpus of hand-picked nasties
(:mod:`tests.fuzz.corpus`). The case counts are those of the ``ci`` profile (about a
minute in all); ``make fuzz`` (``STARLING_FUZZ=1``) runs the ``fuzz`` profile, with
many times more random cases (:mod:`tests.fuzz.budget`).
"""
