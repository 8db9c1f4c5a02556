"""``xmodal-diar prepare SOURCE ... --out DIR``: SpeechBrain CSV manifests for the recipes.

- ``shared-data``: the real data under $XMODAL_DATA (train/valid/test.csv);
- ``videos VIDEO_DIR RTTM``: a folder of videos + RTTM (broadcast; faces paired to turns);
- ``voxceleb AUDIO_DIR... [--video-dir]``: VoxCeleb1/2 layout;
- ``protocol NAME``: any pyannote.database protocol (one CSV per subset).

See :mod:`xmodal_diar.training.manifests` for the columns.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="write SpeechBrain CSV manifests (turns + face teacher) for the training recipes",
        description="Build the CSV manifests (ID,duration,wav,start,stop,spk_id,face_emb,face_quality) of a corpus.",
    )
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)

    def common(p):
        p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder of the CSV files")
        p.add_argument("--max-turn", type=float, default=3.0, help="split turns into parts of at most this (s)")
        p.add_argument("--no-faces", action="store_true", help="labels only: no face extraction")
        p.add_argument("--face-cache", type=Path, default=None, help="folder of cached <video>.faces.npz")
        p.set_defaults(handler=run)

    p = sources.add_parser("shared-data", help="the real data of ../shared/data ($XMODAL_DATA)")
    p.add_argument("--data-folder", type=Path, default=None, help="default: $XMODAL_DATA or ../shared/data")
    p.add_argument("--max-librispeech-speakers", type=int, default=None)
    p.add_argument("--max-talking-heads", type=int, default=None)
    common(p)
    p = sources.add_parser("videos", help="a folder of videos + an RTTM of their speech turns")
    p.add_argument("video_dir", type=Path)
    p.add_argument("rttm", type=Path)
    p.add_argument("--name", default="train", help="CSV name (default train)")
    common(p)
    p = sources.add_parser("voxceleb", help="VoxCeleb1 wav/ or VoxCeleb2 aac/ folders (idXXXXX/VIDEO/NNNNN)")
    p.add_argument("audio_dirs", type=Path, nargs="+")
    p.add_argument("--video-dir", type=Path, default=None, help="VoxCeleb2 mp4/ folder for faces")
    p.add_argument("--name", default="train")
    common(p)
    p = sources.add_parser("protocol", help="a pyannote.database protocol, e.g. REPERE.SpeakerDiarization.Phase2")
    p.add_argument("protocol")
    p.add_argument("--database-yml", type=Path, default=None, help="a database.yml to load first")
    p.add_argument("--subsets", nargs="+", default=["train", "development", "test"])
    common(p)


def run(args: argparse.Namespace) -> int:
    from xmodal_diar.training import manifests as m

    faces = not args.no_faces
    if args.source == "shared-data":
        written = m.prepare_shared_data(args.out, args.data_folder, max_turn=args.max_turn, faces=faces,
                                        face_cache=args.face_cache,
                                        max_librispeech_speakers=args.max_librispeech_speakers,
                                        max_talking_heads=args.max_talking_heads)
    elif args.source == "videos":
        written = {args.name: m.prepare_videos(args.video_dir, args.rttm, args.out, max_turn=args.max_turn,
                                               faces=faces, face_cache=args.face_cache, name=args.name)}
    elif args.source == "voxceleb":
        written = {args.name: m.prepare_voxceleb(args.audio_dirs, args.out, video_dir=args.video_dir,
                                                 max_turn=args.max_turn, faces=faces, face_cache=args.face_cache,
                                                 name=args.name)}
    else:
        written = m.prepare_protocol(args.protocol, args.out, subsets=args.subsets, max_turn=args.max_turn,
                                     faces=faces, face_cache=args.face_cache, database_yml=args.database_yml)
    for name, path in written.items():
        rows = m.read_manifest(path)
        n_faces = sum(r["face"] is not None for r in rows)
        print(f"{name}: {path} ({len(rows)} turns, {len({r['spk_id'] for r in rows})} identities, {n_faces} with a face)")
    return 0
