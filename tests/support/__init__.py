"""Real stand-ins for the outside world that opsdag talks to (Slack, ...), for the tests.

Import as ``support.<module>``: tests/ is on sys.path because tests/conftest.py lives
there (pytest's default ``prepend`` import mode), whether pytest runs as ``pytest`` or
``python -m pytest``.
"""
