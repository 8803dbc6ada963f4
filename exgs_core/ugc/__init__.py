"""UGC: significance, voxel sampling, amplification, and packing of the compressed scene."""

from exgs_core.ugc.pack import PackSettings, pack_scene, unpack_scene

__all__ = ["PackSettings", "pack_scene", "unpack_scene"]
