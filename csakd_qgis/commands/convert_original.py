"""``csakd convert-original``: the authors' ``.pth`` checkpoint in the project's format.

The ``.pth`` is read with ``torch.load(weights_only=True)`` (see
:func:`csakd_qgis.models.load_original`), which refuses any pickled object
other than tensors and plain containers, so a booby-trapped file cannot run
code.  The result is one ``.safetensors`` file with a model card; band
wavelengths come from a raster of the sensor the weights were trained for
(``--bands-wavelengths-from``), otherwise they are recorded as unknown.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from csakd_qgis.errors import InputError
from csakd_qgis.models.card import ModelCard, MsiInfo, Provenance, SpectralBands
from csakd_qgis.models.checkpoint import save_checkpoint
from csakd_qgis.models.files import model_name

NAME = "convert-original"
HELP = "Convert an original CSAKD PyTorch checkpoint (.pth) into a csakd .safetensors model with a card."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare input, output and the metadata options."""
    parser.add_argument("checkpoint", help="the authors' .pth file (Teacher or Student state dict)")
    parser.add_argument("out", help="destination .safetensors file")
    parser.add_argument("--bands-wavelengths-from", metavar="RASTER", default=None,
                        help="hyperspectral raster whose band wavelengths/FWHM the model was trained for")
    parser.add_argument("--scale", type=int, default=4, help="LR/HR pixel-size ratio (the original uses 4)")
    parser.add_argument("--msi-sensor", default=None, help="MSI sensor name for the card, e.g. sentinel2")
    parser.add_argument("--msi-bands", default=None, help="comma-separated MSI band names, e.g. B2,B3,B4,B8")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--json", action="store_true", help="print the written model card as JSON")


def convert(source: Path, out: Path, *, wavelengths_from: Optional[str] = None, scale: int = 4,
            msi_sensor: Optional[str] = None, msi_bands: Optional[Sequence[str]] = None,
            overwrite: bool = False) -> ModelCard:
    """Convert ``source`` (.pth) into ``out`` (.safetensors); return the card written.

    Raises
    ------
    CheckpointError
        When the file holds anything but tensors (``weights_only`` refuses
        it) or does not match the CSAKD architecture.
    InputError
        When ``out`` exists without ``overwrite``, or the wavelength raster
        has another band count.
    """
    from csakd_qgis.models import load_original

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    model = load_original(str(source))
    cfg = model.cfg
    if scale != cfg.scale:
        raise InputError(f"the original network works at scale {cfg.scale}, not {scale}")
    lr_bands = SpectralBands((None,) * cfg.bands)
    if wavelengths_from:
        from csakd_qgis.io.read import read_info

        info = read_info(wavelengths_from)
        if info.count != cfg.bands:
            raise InputError(f"{wavelengths_from} has {info.count} bands but the checkpoint expects {cfg.bands}")
        lr_bands = SpectralBands(tuple(b.wavelength_nm for b in info.bands),
                                 tuple(b.fwhm_nm for b in info.bands) if all(b.fwhm_nm for b in info.bands)
                                 else (), tuple(b.good for b in info.bands))
    names = tuple(msi_bands) if msi_bands else tuple(f"MSI{i + 1}" for i in range(cfg.msi_bands))
    if len(names) != cfg.msi_bands:
        raise InputError(f"--msi-bands names {len(names)} bands but the checkpoint expects {cfg.msi_bands}")
    card = ModelCard(
        name=model_name(out),
        role=cfg.role, config=cfg.to_dict(), scale=cfg.scale, lr_bands=lr_bands,
        msi=MsiInfo(msi_sensor, names), normalisation="p99",
        provenance=Provenance(data=Path(source).name, protocol="original"),
        description="Weights of the original CSAKD implementation (Hsu et al. 2024, MIT licence), converted.",
        limits="Paper-mode CSA attention depends on the input size: tiled output can differ from "
               "whole-image output. The original was trained on inputs normalised differently from "
               "csakd's p99 levels.",
    )
    return save_checkpoint(out, model, card)


def run(args: argparse.Namespace) -> int:
    """Convert and report the card."""
    bands = [b.strip() for b in args.msi_bands.split(",")] if args.msi_bands else None
    card = convert(Path(args.checkpoint), Path(args.out), wavelengths_from=args.bands_wavelengths_from,
                   scale=args.scale, msi_sensor=args.msi_sensor, msi_bands=bands, overwrite=args.overwrite)
    if args.json:
        print(card.to_json())
    else:
        print(f"wrote {args.out} ({card.role}, {card.lr_bands.count} HSI bands, {card.msi.count} MSI bands)")
    return 0

