"""``layout2img serve``: the interactive scene-graph editor, a FastAPI app (:mod:`layout2img.web`) under uvicorn."""
from __future__ import annotations

import argparse
import sys

from .options import add_model_args

# the defaults live with the server; these are only for the help text (argparse loads no torch)
MAX_EDITS, EDIT_QUEUE, MAX_STEPS, MAX_RESTARTS, MAX_BATCH, BATCH_WAIT_MS = 1, 2, 200, 12, 8, 5.0


def add_parser(sub) -> argparse.ArgumentParser:
    s = sub.add_parser("serve", help="the interactive scene-graph editor in a web page",
                       description="Serve a web page to build a scene graph, drag its boxes, see the image "
                                   "update and edit regions of it with text; its JSON API is described at "
                                   "/openapi.json and /docs. Listens on 127.0.0.1 (this machine only) unless "
                                   "--host says otherwise.")
    add_model_args(s, checkpoint=True, device=True, style=True)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    s.add_argument("--clip", default=None, metavar="DIR",
                   help="the CLIP that guides region edits, e.g. runs/clip_shapes from `layout2img train-clip` "
                        "(default: the model's own text encoder; a model without one needs this to edit)")
    s.add_argument("--max-edits", type=int, default=MAX_EDITS,
                   help=f"edits that run at once (default {MAX_EDITS}; {EDIT_QUEUE} more may wait, "
                        "further ones are refused with 429)")
    s.add_argument("--edit-steps", type=int, default=None, metavar="N",
                   help=f"optimisation steps of an edit (default: edit's own; at most {MAX_STEPS})")
    s.add_argument("--edit-restarts", type=int, default=None, metavar="N",
                   help=f"restarts of an edit (default: edit's own; at most {MAX_RESTARTS}); fewer steps and "
                        "restarts make edits faster and weaker")
    s.add_argument("--max-batch", type=int, default=MAX_BATCH, metavar="N",
                   help=f"generate requests that arrive together share one model call, at most N "
                        f"(default {MAX_BATCH}; 1: each alone)")
    s.add_argument("--batch-wait-ms", type=float, default=BATCH_WAIT_MS, metavar="MS",
                   help=f"how long a request waits for company while the model is free (default {BATCH_WAIT_MS:g})")
    s.add_argument("--quiet", action="store_true", help="log only failures, not every request")
    s.set_defaults(func=run)
    return s


def load_clip(spec: str, device):
    """The CLIP of ``--clip``, frozen (ConfigError naming --clip when it cannot be loaded)."""
    from ..errors import ConfigError, Layout2ImgError
    from ..models.text import TextEncoder

    try:
        return TextEncoder.load(spec, device=device).freeze()
    except Layout2ImgError as e:  # said of the loader's "text_encoder:" setting: say it of --clip
        message = str(e).removeprefix("text_encoder: ")
        raise ConfigError(f"--clip {message}" if message.startswith(spec) else f"--clip {spec}: {message}") from None


def run(args) -> int:
    from ..errors import ConfigError
    from ..generate import load_model
    from ..pipeline.inputs import resolve_style_source
    from ..web.protocol import is_loopback
    from ..web.server import EditorServer, build_app

    if not 0 <= args.port <= 65535:  # before loading a model for nothing
        raise ConfigError(f"--port {args.port}: expected 0..65535")
    model = load_model(args.checkpoint, args.device)
    resolve_style_source(model, args.style, args.checkpoint)  # before loading a CLIP for nothing
    clip = load_clip(args.clip, model.device) if args.clip is not None else None
    loopback = is_loopback(args.host.strip("[]"))
    app = build_app(model, checkpoint=str(args.checkpoint), clip=clip, clip_spec=args.clip, style=args.style,
                    loopback_only=loopback, max_edits=args.max_edits, max_batch=args.max_batch,
                    batch_wait=args.batch_wait_ms / 1000, quiet=args.quiet,
                    edit_options={"steps": args.edit_steps, "restarts": args.edit_restarts})
    server = EditorServer(app, args.host, args.port)
    if not loopback:
        print(f"warning: listening on {args.host}: anyone who can reach this address can use the model",
              file=sys.stderr)
    print(f"layout2img editor on {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # uvicorn has stopped; it re-raises the Ctrl-C it caught
        pass
    finally:
        server.socket.close()
    print("stopped", file=sys.stderr)
    return 0
