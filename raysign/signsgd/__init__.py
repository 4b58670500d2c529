"""Distributed signSGD with majority vote (Bernstein et al., ICML 2018 / ICLR 2019).

``config`` (SignSGDConfig), ``replica`` (one worker's computation: gradient, momentum, attack,
update), ``models``, ``attacks`` (Byzantine behaviours), ``aggregators`` (robust fp32
baselines), ``checkpoint``, ``records`` (a run's step records, stage times and summary) and
``report`` (figures). The shared kernels are ``raysign.signs``
(pack, unpack, vote), ``raysign.wire`` (messages) and ``raysign.optim``; the Ray actors that
run it are in ``raysign.actors`` (the repository's ``actors/`` folder).
"""
