"""Parameter helpers shared by the algorithms: device choice, GDAL sources, GeoTIFF destinations."""

import os

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


def add_product_inputs(algorithm):
    """Make ``LR_HSI``/``HR_MSI`` optional and add product files, masks and the MSI band identity.

    A product as downloaded is given as a file (``LR_PRODUCT``, ``MSI_PRODUCT``:
    EnMAP METADATA.XML, Sentinel-2 MTD_MSIL2A.xml or .zip, Landsat MTL,
    PRISMA .he5, EMIT .nc), which works in qgis_process and Model Builder
    where a folder or an XML is no raster layer.  Call after
    :func:`add_pair_inputs`.
    """
    for name in ("LR_HSI", "HR_MSI"):
        parameter = algorithm.parameterDefinition(name)
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagOptional)
    algorithm.addParameter(QgsProcessingParameterFile(
        "LR_PRODUCT", algorithm.tr("LR-HSI product file (EnMAP METADATA.XML, PRISMA .he5, EMIT .nc; replaces the "
                                   "layer)"), optional=True))
    algorithm.addParameter(QgsProcessingParameterFile(
        "MSI_PRODUCT", algorithm.tr("HR-MSI product file (Sentinel-2 MTD_MSIL2A.xml or .zip, Landsat MTL; "
                                    "replaces the layer)"), optional=True))
    algorithm.addParameter(QgsProcessingParameterRasterLayer(
        "LR_MASK", algorithm.tr("LR-HSI mask (nonzero = exclude)"), optional=True))
    algorithm.addParameter(QgsProcessingParameterRasterLayer(
        "MSI_MASK", algorithm.tr("HR-MSI mask (nonzero = exclude)"), optional=True))
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


def product_sources(algorithm, parameters, context):
    """``dict(lr_hsi, hr_msi, lr_mask, msi_mask, msi_bands)`` for the engine: a product file, else the layer."""
    from csakd_qgis.options import MsiBands

    found = {}
    for key, layer, product in (("lr_hsi", "LR_HSI", "LR_PRODUCT"), ("hr_msi", "HR_MSI", "MSI_PRODUCT")):
        path = (algorithm.parameterAsFile(parameters, product, context) or "").strip()
        found[key] = path or layer_source(algorithm, parameters, layer, context)
    found["lr_mask"] = optional_layer_source(algorithm, parameters, "LR_MASK", context)
    found["msi_mask"] = optional_layer_source(algorithm, parameters, "MSI_MASK", context)
    found["msi_bands"] = MsiBands.parse(
        algorithm.parameterAsEnumString(parameters, "MSI_SENSOR", context) or None,
        algorithm.parameterAsString(parameters, "MSI_BANDS", context) or None,
        algorithm.parameterAsString(parameters, "MSI_WAVELENGTHS", context) or None)
    return found


def add_grid_outputs(algorithm):
    """Add the ``SCALE``, ``SHIFT_X`` and ``SHIFT_Y`` number outputs of a fusion or co-registration."""
    algorithm.addOutput(QgsProcessingOutputNumber("SCALE", algorithm.tr("Scale used")))
    algorithm.addOutput(QgsProcessingOutputNumber("SHIFT_X", algorithm.tr("Estimated shift east [LR pixels]")))
    algorithm.addOutput(QgsProcessingOutputNumber("SHIFT_Y", algorithm.tr("Estimated shift south [LR pixels]")))
