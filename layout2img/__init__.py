"""layout2img: scene graph -> layout -> image, with CLIP text guidance."""
from .errors import Layout2ImgError
from .version import __version__
from .vocab import Vocab

__all__ = ["Layout2ImgError", "SceneGraph", "SceneGraphToImage", "Vocab", "__version__"]


def __getattr__(name):  # heavy modules load on first use, so `layout2img --help` stays fast
    if name == "SceneGraph":
        from .graph import SceneGraph

        return SceneGraph
    if name == "SceneGraphToImage":
        from .pipeline import SceneGraphToImage

        return SceneGraphToImage
    raise AttributeError(name)
