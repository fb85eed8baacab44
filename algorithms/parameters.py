"""Parameter helpers shared by the algorithms: device choice, GDAL sources, GeoTIFF destinations."""

import os
from dataclasses import dataclass
from typing import Optional

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .dependencies import ensure_engine_importable, missing_packages


def engine_choices():
    """``csakd_qgis.options``: the engine's choice lists and defaults (plain Python: no torch, no GDAL)."""
    ensure_engine_importable()
    from csakd_qgis import options

    return options


def installed_models():
    """``[(name, card)]`` of the installed models, or [] when the engine's dependencies are missing."""
    if missing_packages():
        return []
    ensure_engine_importable()
    from csakd_qgis.models.store import list_models

    return [(card.name, card) for _, card in list_models()]


def add_device_parameter(algorithm, name="DEVICE"):
    """Add the device choice (auto = CUDA, then Apple MPS, then CPU)."""
    algorithm.addParameter(QgsProcessingParameterEnum(
        name, algorithm.tr("Device (auto: GPU when there is one)"), options=list(engine_choices().DEVICES),
        defaultValue="auto", usesStaticStrings=True))


def layer_source(algorithm, parameters, name, context):
    """The GDAL data source of a raster layer parameter, or an error naming the parameter."""
    layer = algorithm.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        raise QgsProcessingException(algorithm.invalidRasterError(parameters, name))
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"{name}: layer '{layer.name()}' comes from the '{layer.providerType()}' provider; "
            "CSAKD reads rasters through GDAL: save it as a GeoTIFF first (Export > Save As)."
        )
    return layer.source()


def raster_destination(algorithm, parameters, context, name="OUTPUT"):
    """The output path of a raster destination parameter; the engine writes GeoTIFF only."""
    path = algorithm.parameterAsOutputLayer(parameters, name, context)
    if os.path.splitext(path)[1].lower() not in (".tif", ".tiff"):
        raise QgsProcessingException(
            f"{name}: '{path}' is not a GeoTIFF file name; CSAKD writes GeoTIFF (.tif) outputs."
        )
    return path


def optional_layer_source(algorithm, parameters, name, context):
    """Like :func:`layer_source`, or None when the optional parameter was left empty."""
    if algorithm.parameterAsRasterLayer(parameters, name, context) is None:
        return None
    return layer_source(algorithm, parameters, name, context)


def add_pair_inputs(algorithm, shift_correction=True):
    """Add the LR-HSI and HR-MSI layers (``LR_HSI``, ``HR_MSI``) and the shift-correction switch."""
    algorithm.addParameter(QgsProcessingParameterRasterLayer(
        "LR_HSI", algorithm.tr("Low-resolution hyperspectral image (LR-HSI)")))
    algorithm.addParameter(QgsProcessingParameterRasterLayer(
        "HR_MSI", algorithm.tr("High-resolution multispectral image (HR-MSI)")))
    algorithm.addParameter(QgsProcessingParameterBoolean(
        "SHIFT_CORRECTION", algorithm.tr("Estimate and correct sub-pixel misregistration"), shift_correction))


@dataclass(frozen=True)
class ProductInput:
    """A raster-layer input that may instead be given as a product file, and its mask.

    ``layer``/``product``/``mask`` are parameter ids; ``key`` and ``mask_key``
    the engine's keywords (``fuse(lr_hsi=..., lr_mask=...)``); the resolved
    masks go to the engine as ``<mask_key>s`` (``coregister(lr_masks=...)``).
    """

    layer: str
    product: str
    key: str
    role: str
    formats: str
    mask: Optional[str] = None
    mask_key: Optional[str] = None


HSI_FORMATS = "EnMAP METADATA.XML, PRISMA .he5, EMIT .nc"

#: Every input an algorithm may take as a product file, in the order the dialogs list them.
PRODUCT_INPUTS = (
    ProductInput("LR_HSI", "LR_PRODUCT", "lr_hsi", "LR-HSI", HSI_FORMATS, "LR_MASK", "lr_mask"),
    ProductInput("HR_MSI", "MSI_PRODUCT", "hr_msi", "HR-MSI", "Sentinel-2 MTD_MSIL2A.xml or .zip, Landsat MTL",
                 "MSI_MASK", "msi_mask"),
    ProductInput("REFERENCE", "REFERENCE_PRODUCT", "reference", "Reference HR-HSI", HSI_FORMATS),
)


def add_product_inputs(algorithm, layers=("LR_HSI", "HR_MSI"), masks=True, msi_bands=True):
    """Make the raster layers ``layers`` optional and add a product file for each, masks and the MSI band identity.

    A product as downloaded is given as a file (``LR_PRODUCT``,
    ``MSI_PRODUCT``, ``REFERENCE_PRODUCT``: EnMAP METADATA.XML, Sentinel-2
    MTD_MSIL2A.xml or .zip, Landsat MTL, PRISMA .he5, EMIT .nc), which works
    in qgis_process and Model Builder where a folder or an XML is no raster
    layer.  ``masks`` adds ``LR_MASK``/``MSI_MASK`` for the layers that have
    one (where the engine function takes masks), ``msi_bands`` the
    ``MSI_SENSOR``/``MSI_BANDS``/``MSI_WAVELENGTHS`` identity (where it takes
    one).  Call after the layers are added; :func:`product_sources` reads
    back whatever was added.
    """
    chosen = [item for item in PRODUCT_INPUTS if item.layer in layers]
    for item in chosen:
        parameter = algorithm.parameterDefinition(item.layer)
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagOptional)
        algorithm.addParameter(QgsProcessingParameterFile(
            item.product, algorithm.tr(f"{item.role} product file ({item.formats}; replaces the layer)"),
            optional=True))
    for item in chosen if masks else ():
        if item.mask:
            algorithm.addParameter(QgsProcessingParameterRasterLayer(
                item.mask, algorithm.tr(f"{item.role} mask (nonzero = exclude)"), optional=True))
    if not msi_bands:
        return
    sensor = QgsProcessingParameterEnum(
        "MSI_SENSOR", algorithm.tr("HR-MSI sensor (when its metadata lacks wavelengths)"),
        options=[""] + list(engine_choices().SENSORS), defaultValue="", optional=True, usesStaticStrings=True)
    bands = QgsProcessingParameterString(
        "MSI_BANDS", algorithm.tr("HR-MSI bands of that sensor in the raster's order, e.g. B4,B3,B2,B8"),
        optional=True)
    wavelengths = QgsProcessingParameterString(
        "MSI_WAVELENGTHS", algorithm.tr("HR-MSI band centres [nm] of another camera, e.g. 490,560,665,842"),
        optional=True)
    for parameter in (sensor, bands, wavelengths):
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        algorithm.addParameter(parameter)


def product_sources(algorithm, parameters, context, required=True):
    """The inputs :func:`add_product_inputs` added, as the engine's keywords: a product file, else the layer.

    ``dict(lr_hsi, hr_msi[, reference][, lr_mask, msi_mask][, msi_bands])``
    with only the keys of the parameters the algorithm has.  ``required``:
    each input must be given (as a file or a layer); else an absent one is None.
    """
    from csakd_qgis.errors import CsakdError
    from csakd_qgis.options import MsiBands

    layer = layer_source if required else optional_layer_source
    found = {}
    for item in PRODUCT_INPUTS:
        if algorithm.parameterDefinition(item.product) is None:
            continue
        path = (algorithm.parameterAsFile(parameters, item.product, context) or "").strip()
        found[item.key] = path or layer(algorithm, parameters, item.layer, context)
        if item.mask and algorithm.parameterDefinition(item.mask) is not None:
            found[item.mask_key] = optional_layer_source(algorithm, parameters, item.mask, context)
    if algorithm.parameterDefinition("MSI_SENSOR") is not None:
        try:
            found["msi_bands"] = MsiBands.parse(
                algorithm.parameterAsEnumString(parameters, "MSI_SENSOR", context) or None,
                algorithm.parameterAsString(parameters, "MSI_BANDS", context) or None,
                algorithm.parameterAsString(parameters, "MSI_WAVELENGTHS", context) or None)
        except CsakdError as error:
            raise QgsProcessingException(str(error)) from None
    return found


def resolved_sources(algorithm, parameters, context, feedback, required=True):
    """:func:`product_sources` with the products read, for engine functions that take paths GDAL opens.

    Each product becomes its VRT/GeoTIFF (:func:`csakd_qgis.fusion.inputs.resolve_one`,
    as the ``csakd`` commands do) and what was read goes to ``feedback``.
    Returns ``dict(lr_hsi, hr_msi[, reference], lr_masks, msi_masks[, msi_bands])``:
    paths (None for an absent optional input) and, per input that has a mask,
    the tuple of masks (the user's, then the product's; nonzero = exclude).
    """
    sources = product_sources(algorithm, parameters, context, required)
    resolved, notes = algorithm.run_engine(feedback, _resolve, sources)
    for line in notes:
        feedback.pushInfo(line)
    return resolved


def _resolve(sources, reporter):
    """``(resolved, notes)`` of :func:`resolved_sources`, in the engine (its errors become one message)."""
    from csakd_qgis.errors import InputError
    from csakd_qgis.fusion.inputs import resolve_one

    resolved, notes = {}, []
    for item in PRODUCT_INPUTS:
        if item.key not in sources:
            continue
        path, mask = sources[item.key], sources.get(item.mask_key) if item.mask_key else None
        masks = ()
        if path is None and mask:
            raise InputError(f"{item.mask}: a mask without the {item.role} it belongs to")
        if path is not None:
            reporter.check()
            path, masks, lines = resolve_one(path, item.role, mask)
            notes.extend(lines)
        resolved[item.key] = path
        if item.mask_key:
            resolved[f"{item.mask_key}s"] = masks
    if "msi_bands" in sources:
        resolved["msi_bands"] = sources["msi_bands"]
    return resolved, notes


def add_grid_outputs(algorithm):
    """Add the ``SCALE``, ``SHIFT_X`` and ``SHIFT_Y`` number outputs of a fusion or co-registration."""
    algorithm.addOutput(QgsProcessingOutputNumber("SCALE", algorithm.tr("Scale used")))
    algorithm.addOutput(QgsProcessingOutputNumber("SHIFT_X", algorithm.tr("Estimated shift east [LR pixels]")))
    algorithm.addOutput(QgsProcessingOutputNumber("SHIFT_Y", algorithm.tr("Estimated shift south [LR pixels]")))
