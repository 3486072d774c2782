"""Normalisation per channel, chosen from ``channel_names`` and the fingerprint (nnU-Net's rules;
CT windowing into several channels as Pham et al. 2022)."""
from __future__ import annotations

from ..data.dataset import Dataset
from ..utils import SemisegError

CT_WINDOWS = {  # (level, width) in HU; Pham et al. 2022, section 2.1 stacks abdomen, chest and bone windows
    "abdomen": (40.0, 400.0),
    "chest": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


def choose_normalization(ds: Dataset, fp: dict, ct_stats: str | None, ct_windows: list | None) -> list[dict]:
    out = []
    # nnU-Net normalises inside the non-zero mask when cropping removed > 25 % of the volume; we also
    # do when > 25 % of the cropped volume is exactly zero (skull-stripped scans already cropped
    # to the brain, like BraTS-mini), where the zeros are padding, not tissue
    use_mask = fp["median_crop_fraction"] < 0.75 or fp.get("median_zero_fraction_in_crop", 0) > 0.25
    for c, name in enumerate(ds.channel_names):
        st = fp["intensity"][c]
        key = name.strip().lower()
        if key == "ct":
            if ct_windows:
                out.append({"channel": name, "scheme": "ct_windows",
                            "windows": [{"name": w[0], "level": w[1], "width": w[2]} for w in ct_windows],
                            "why": "CT windowing into one channel per window (Pham et al. 2022)"})
                continue
            src = ct_stats or ("foreground" if st["foreground"] else "all_voxels")
            s = st[src] if src == "foreground" else st["all_voxels"]
            if not s:
                raise SemisegError(f"{ds.root}: no labeled foreground for CT statistics; use --ct-stats all")
            out.append({"channel": name, "scheme": "ct", "stats": src,
                        "clip": [s["percentile_00_5"], s["percentile_99_5"]],
                        "mean": s["mean"], "std": s["std"],
                        "why": f"CT: clip to the 0.5/99.5 percentiles of the {src.replace('_', ' ')} "
                               "then z-score with its mean/std (nnU-Net; 'all voxels' is Huang et al.'s variant)"})
        elif key in ("nonorm", "none"):
            out.append({"channel": name, "scheme": "none", "why": "channel name says noNorm"})
        elif key in ("rescale_to_0_1", "rgb_to_0_1"):
            out.append({"channel": name, "scheme": key, "why": f"channel name says {name}"})
        else:
            out.append({"channel": name, "scheme": "zscore", "use_mask": bool(use_mask),
                        "why": "non-CT (MRI-like, no absolute scale): per-case z-score" +
                               (" inside the non-zero mask (cropping removed > 25 % of the volume, or > 25 %"
                                " of the cropped volume is zero padding)"
                                if use_mask else "")})
    return out


def parse_windows(spec: str | None) -> list | None:
    """``abdomen,chest,bone`` or ``name:level:width,...`` -> [(name, level, width), ...]."""
    if not spec:
        return None
    out = []
    for item in spec.split(","):
        item = item.strip()
        if item in CT_WINDOWS:
            out.append((item, *CT_WINDOWS[item]))
            continue
        parts = item.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            out.append((parts[0], float(parts[1]), float(parts[2])))
        except ValueError:
            raise SemisegError(f"--ct-windows: {item!r} is neither a known window "
                               f"({', '.join(CT_WINDOWS)}) nor name:level:width") from None
    return out
