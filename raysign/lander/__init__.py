"""Neural Lander (Shi et al., ICRA 2019): ground-effect landing environments, a spectrally
normalised residual network, data collection and the stable residual-cancelling controller.

Importing this package registers the gymnasium environments
``raysign/GroundEffectLander-v0`` (1-D vertical) and ``raysign/GroundEffectLander3D-v0``
(3-D point mass).
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

ENV_ID = "raysign/GroundEffectLander-v0"
ENV_3D_ID = "raysign/GroundEffectLander3D-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="raysign.lander.env:GroundEffectLanderEnv",
             max_episode_steps=1000)
if ENV_3D_ID not in registry:
    register(id=ENV_3D_ID, entry_point="raysign.lander.env3d:GroundEffectLander3DEnv",
             max_episode_steps=1000)
