"""Ids of users, posts, topics and channels: one rule, defined here and imported everywhere.

An id is 1 to 64 characters of ``[A-Za-z0-9_.:@-]`` (ASCII letters, digits and
``_ . : @ -``): what fits a Redis key, a URL path segment and a Cypher
parameter without escaping, and what the real data's ids are (numbers,
``hn:…``, ``md:…``, Reddit's base-36 ids).
"""

from __future__ import annotations

import re
from typing import Final

ID_CHARACTERS: Final = "A-Za-z0-9_.:@-"
ID: Final = re.compile(rf"[{ID_CHARACTERS}]{{1,64}}")
"""Matches an id with :meth:`re.Pattern.fullmatch`."""
ID_RULE: Final = f"1-64 characters of [{ID_CHARACTERS}]"
"""The rule in words, for error messages."""
