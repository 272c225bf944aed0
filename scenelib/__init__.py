"""scenelib: transfer learning for scene and land-use image classification.

The notebooks in ``notebooks/`` narrate; this package does the work. Modules, one concern each:
``datasets`` (registry, one file per dataset), ``integrity``, ``splits``, ``transforms``, ``models``
(registry), ``weights`` (online and offline providers), ``features`` (the frozen-prefix cache), ``training``,
``evaluation``, ``benchmark``, ``quantization``, ``plots``, ``report``, ``rundir`` (the run-directory contract)
and ``pipeline`` (what ``run_all.py`` drives).
"""

__version__ = "0.1.0"
