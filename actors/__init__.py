"""The distributed system: Ray actors, the training driver, job entry points and sweeps.

Everything here imports ``ray``; the algorithms it distributes live in ``raysign``.
"""
