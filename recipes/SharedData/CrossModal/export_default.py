#!/usr/bin/env python3
"""Write the chosen embedding into the package's embedded default model directory.

    python export_default.py campplus                           # the bare pretrained CAM++ trunk
    python export_default.py results/campplus_tet/1986/model    # an exported head (frozen trunk)

Writes ``hyperparams.yaml`` + ``embedding_model.ckpt`` (SpeechBrain), ``pytorch_model.bin``
(pyannote) and ``xmodal_diar.json`` into ``xmodal_diar/pretrained/default`` (``--out``); the
pipeline's ``config.yaml``, ``tuning.json`` and the model card are left as they are. A frozen
trunk is named, not copied: the files hold the head only and the trunk loads from the model
cache (``python -m xmodal_diar.weights install``).
"""

import argparse
import json
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[3] / "xmodal_diar" / "pretrained" / "default"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a registered pretrained trunk (campplus, ecapa-voxceleb) or an exported model dir")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--note", default=None, help="recorded in xmodal_diar.json (what was measured)")
    args = parser.parse_args(argv)
    import torch

    from xmodal_diar.adapters.pyannote import save_pyannote_checkpoint
    from xmodal_diar.adapters.speechbrain import export_speechbrain
    from xmodal_diar.models import ENCODERS, build_encoder, encoder_name

    if args.model in ENCODERS:
        encoder, info = build_encoder(args.model), {"source": f"pretrained trunk {args.model}, no trained head"}
    else:
        src = Path(args.model)
        meta = json.loads((src / "xmodal_diar.json").read_text())
        encoder = build_encoder(meta["encoder"], **meta["encoder_config"])
        encoder.embedding_model.load_state_dict(torch.load(src / "embedding_model.ckpt", map_location="cpu"))
        info = {"source": str(src), **{k: v for k, v in meta.items() if k not in ("encoder", "encoder_config")}}
    encoder.eval()
    export_speechbrain(encoder, args.out)
    save_pyannote_checkpoint(encoder, args.out)
    meta = {"encoder": encoder_name(encoder), "encoder_config": encoder.config, **info}
    if args.note:
        meta["note"] = args.note
    (args.out / "xmodal_diar.json").write_text(json.dumps(meta, indent=2) + "\n")
    for name in ("hyperparams.yaml", "embedding_model.ckpt", "pytorch_model.bin", "xmodal_diar.json"):
        print(f"{args.out / name}  {(args.out / name).stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
