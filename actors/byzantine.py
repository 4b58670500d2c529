"""``ByzantineWorker``: a ``SignWorker`` whose outgoing message passes through an attack.

The attack (``raysign.signsgd.attacks``, chosen by ``SignSGDConfig.attack``: a built-in name or
a user's ``"package.module:name"``) acts on the momentum before compression; the worker
otherwise behaves like an honest one, including applying the vote to its own replica. An
attack crafted from the honest messages (``OMNISCIENT_ATTACKS``, or a user's attack of three
parameters) replaces the worker's messages in ``craft_omniscient_messages``.
"""

from __future__ import annotations

from raysign.actors.worker import SignWorker


class ByzantineWorker(SignWorker):
    byzantine = True
