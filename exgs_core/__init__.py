"""exgs_core: extreme 3D Gaussian Splatting compression (UGC + GaussPainter), bpy-free.

Importing this package needs only numpy; rendering, compression and restoration import torch lazily.
"""

from exgs_core.errors import CameraFormatError, ExgsError, SceneFormatError
from exgs_core.scene import GaussianScene

__version__ = "0.1.0"

__all__ = ["GaussianScene", "ExgsError", "SceneFormatError", "CameraFormatError", "__version__"]
