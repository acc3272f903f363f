"""Release strategies: canary, blue-green and rolling, each the task group a release branches into.

``choice`` decides which one a run takes, ``stages`` lists each one's gates as plain data,
``undo`` says how each is undone, and one module per strategy builds its task group.
"""
