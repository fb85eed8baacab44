"""``csakd:fuse``: LR-HSI + HR-MSI → HR-HSI GeoTIFF through the engine's one fusion path."""

from qgis.core import (
    QgsProcessingOutputString,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from .base import CsakdAlgorithm
from .parameters import add_device_parameter, add_grid_outputs, add_pair_inputs, layer_source, raster_destination

METHODS = ("student", "teacher", "bicubic", "gsa")
BACKENDS = ("auto", "torch", "onnxruntime")
DATA_TYPES = ("float32", "int16", "uint16")


class FuseAlgorithm(CsakdAlgorithm):
    """Fuse one LR-HSI with one HR-MSI."""

    ID = "fuse"
    DISPLAY = "Fuse hyperspectral and multispectral images"

    LR_HSI, HR_MSI, MODEL, METHOD = "LR_HSI", "HR_MSI", "MODEL", "METHOD"
    DEVICE, TILE_SIZE, OVERLAP, BATCH_SIZE = "DEVICE", "TILE_SIZE", "OVERLAP", "BATCH_SIZE"
    SHIFT_CORRECTION, DATA_TYPE, OUTPUT, REPORT = "SHIFT_CORRECTION", "DATA_TYPE", "OUTPUT", "REPORT"
    SCALE, SHIFT_X, SHIFT_Y, MODEL_USED = "SCALE", "SHIFT_X", "SHIFT_Y", "MODEL_USED"
    BACKEND, SCHEDULER = "BACKEND", "SCHEDULER"

    def initAlgorithm(self, config=None):  # noqa: N802
        """Declare parameters and outputs."""
        add_pair_inputs(self)
        self.addParameter(QgsProcessingParameterEnum(
            self.METHOD, self.tr("Method"), options=list(METHODS), defaultValue="student",
            usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterString(
            self.MODEL, self.tr("Model: 'auto', a bundled model name, or a .safetensors or .onnx file"),
            defaultValue="auto"))
        add_device_parameter(self)
        advanced = [
            QgsProcessingParameterNumber(self.TILE_SIZE, self.tr("Tile size [LR-HSI pixels]"),
                                         QgsProcessingParameterNumber.Integer, 64, False, 8, 4096),
            QgsProcessingParameterNumber(self.OVERLAP, self.tr("Tile overlap [LR-HSI pixels]"),
                                         QgsProcessingParameterNumber.Integer, 8, False, 0, 512),
            QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Tiles per batch"),
                                         QgsProcessingParameterNumber.Integer, 4, False, 1, 256),
            QgsProcessingParameterEnum(self.BACKEND, self.tr("Inference backend (auto: onnxruntime for .onnx)"),
                                       options=list(BACKENDS), defaultValue="auto", usesStaticStrings=True),
            QgsProcessingParameterString(self.SCHEDULER, self.tr("Dask scheduler address, e.g. tcp://host:8786 "
                                                                 "(empty: fuse on this machine)"),
                                         defaultValue="", optional=True),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterEnum(
            self.DATA_TYPE, self.tr("Output data type"), options=list(DATA_TYPES), defaultValue="float32",
            usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT, self.tr("Fused high-resolution hyperspectral image")))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.REPORT, self.tr("Run report"), self.tr("HTML files (*.html)"), optional=True,
            createByDefault=False))
        add_grid_outputs(self)
        self.addOutput(QgsProcessingOutputString(self.MODEL_USED, self.tr("Model used")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Run the engine's ``fuse`` and return the outputs keyed by the output constants."""
        self.engine()
        from csakd_qgis.fusion.engine import fuse
        from csakd_qgis.quality.report import write_fuse_report

        output = raster_destination(self, parameters, context)
        inputs = (layer_source(self, parameters, self.LR_HSI, context),
                  layer_source(self, parameters, self.HR_MSI, context), output)
        options = dict(
            model=self.parameterAsString(parameters, self.MODEL, context).strip() or "auto",
            method=self.parameterAsEnumString(parameters, self.METHOD, context),
            device=self.parameterAsEnumString(parameters, self.DEVICE, context),
            tile=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            overlap=self.parameterAsInt(parameters, self.OVERLAP, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            shift_correction=self.parameterAsBool(parameters, self.SHIFT_CORRECTION, context),
            dtype=self.parameterAsEnumString(parameters, self.DATA_TYPE, context),
            overwrite=True,
        )
        scheduler = (self.parameterAsString(parameters, self.SCHEDULER, context) or "").strip()
        backend = self.parameterAsEnumString(parameters, self.BACKEND, context) or "auto"
        if scheduler:
            cluster = self.run_engine(feedback, _fuse_on_cluster, *inputs, scheduler=scheduler, options=options)
            lines, report = cluster.summary_lines(), cluster.fuse
        else:
            report = self.run_engine(feedback, fuse, *inputs, backend=backend, **options)
            lines = report.summary_lines()
        for line in lines:
            feedback.pushInfo(line)
        results = {
            self.OUTPUT: output,
            self.SCALE: report.scale,
            self.SHIFT_X: report.shift[0],
            self.SHIFT_Y: report.shift[1],
            self.MODEL_USED: report.model or report.method,
        }
        html = self.parameterAsFileOutput(parameters, self.REPORT, context)
        if html:
            write_fuse_report(report, html)
            results[self.REPORT] = html
        return results


def _fuse_on_cluster(lr_hsi, hr_msi, output, *, scheduler, options, reporter):
    """``csakd_qgis.distributed.fuse_distributed`` on the Dask scheduler at ``scheduler`` with ``fuse``'s options."""
    from csakd_qgis.distributed import ClusterOptions, fuse_distributed, open_client

    with open_client(scheduler) as client:
        return fuse_distributed(lr_hsi, hr_msi, output, client=client, options=ClusterOptions(**options),
                                reporter=reporter)
