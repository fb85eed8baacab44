"""Parameter helpers shared by the algorithms: device choice, GDAL sources, GeoTIFF destinations."""

import os

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterRasterLayer,
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


def add_grid_outputs(algorithm):
    """Add the ``SCALE``, ``SHIFT_X`` and ``SHIFT_Y`` number outputs of a fusion or co-registration."""
    algorithm.addOutput(QgsProcessingOutputNumber("SCALE", algorithm.tr("Scale used")))
    algorithm.addOutput(QgsProcessingOutputNumber("SHIFT_X", algorithm.tr("Estimated shift east [LR pixels]")))
    algorithm.addOutput(QgsProcessingOutputNumber("SHIFT_Y", algorithm.tr("Estimated shift south [LR pixels]")))
