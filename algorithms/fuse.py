"""``csakd:fuse``: LR-HSI + HR-MSI → HR-HSI GeoTIFF through the engine's one fusion path."""

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from .base import CsakdAlgorithm
from .parameters import (
    add_device_parameter,
    add_grid_outputs,
    add_pair_inputs,
    add_product_inputs,
    engine_choices,
    installed_models,
    product_sources,
    raster_destination,
)


class FuseAlgorithm(CsakdAlgorithm):
    """Fuse one LR-HSI with one HR-MSI."""

    ID = "fuse"
    DISPLAY = "Fuse hyperspectral and multispectral images"

    LR_HSI, HR_MSI, MODEL, MODEL_FILE, METHOD = "LR_HSI", "HR_MSI", "MODEL", "MODEL_FILE", "METHOD"
    DEVICE, TILE_SIZE, OVERLAP, BATCH_SIZE = "DEVICE", "TILE_SIZE", "OVERLAP", "BATCH_SIZE"
    SHIFT_CORRECTION, DATA_TYPE, OUTPUT, REPORT = "SHIFT_CORRECTION", "DATA_TYPE", "OUTPUT", "REPORT"
    SCALE, SHIFT_X, SHIFT_Y, MODEL_USED = "SCALE", "SHIFT_X", "SHIFT_Y", "MODEL_USED"
    BACKEND, PRECISION, SCHEDULER, GUARD = "BACKEND", "PRECISION", "SCHEDULER", "GUARD"
    METHOD_USED, PSF_SIGMA, SNR_LR_DB, EMPTY_BANDS = "METHOD_USED", "PSF_SIGMA", "SNR_LR_DB", "EMPTY_BANDS"

    def initAlgorithm(self, config=None):  # noqa: N802
        """Declare parameters and outputs (choice lists and defaults from ``csakd_qgis.options``)."""
        choices = engine_choices()
        add_pair_inputs(self)
        add_product_inputs(self)
        self.addParameter(QgsProcessingParameterEnum(
            self.METHOD, self.tr("Method (auto: a network only where its card shows it beats the classical methods)"),
            options=list(choices.METHODS), defaultValue="auto",
            usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL, self.tr("Model (auto: an installed model that fits the inputs)"),
            options=["auto"] + [name for name, _ in installed_models()], defaultValue="auto",
            usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL_FILE, self.tr("Model file (.safetensors or .onnx; replaces the model chosen above)"),
            optional=True, fileFilter=self.tr("CSAKD models (*.safetensors *.onnx)")))
        add_device_parameter(self)
        advanced = [
            QgsProcessingParameterNumber(self.TILE_SIZE, self.tr("Tile size [LR-HSI pixels]"),
                                         QgsProcessingParameterNumber.Integer, choices.TILE, False, 8,
                                         choices.MAX_TILE),
            QgsProcessingParameterNumber(self.OVERLAP, self.tr(
                f"Tile overlap [LR-HSI pixels] (empty: {choices.OVERLAP}, at most a quarter of the tile)"),
                QgsProcessingParameterNumber.Integer, None, True, 0, choices.MAX_TILE // 4),
            QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr(
                f"Tiles per batch (empty: {choices.CPU_BATCH_SIZE} on the CPU, {choices.GPU_BATCH_SIZE} on a GPU)"),
                QgsProcessingParameterNumber.Integer, None, True, 1, choices.MAX_BATCH),
            QgsProcessingParameterEnum(self.BACKEND,
                                       self.tr("Inference backend (auto: onnxruntime on the CPU when installed)"),
                                       options=list(choices.BACKENDS), defaultValue="auto", usesStaticStrings=True),
            QgsProcessingParameterEnum(self.PRECISION, self.tr("Network precision on a GPU (the CPU uses float32)"),
                                       options=list(choices.PRECISIONS), defaultValue="float32",
                                       usesStaticStrings=True),
            QgsProcessingParameterBoolean(self.GUARD, self.tr("Refuse an output that disagrees with its inputs "
                                                              "(a misread input: units, offset, band order)"), True),
            QgsProcessingParameterString(self.SCHEDULER, self.tr("Dask scheduler address, e.g. tcp://host:8786 "
                                                                 "(empty: fuse on this machine)"),
                                         defaultValue="", optional=True),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterEnum(
            self.DATA_TYPE, self.tr("Output data type"), options=[d for d in choices.DTYPES if d != "same"],
            defaultValue="float32", usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT, self.tr("Fused high-resolution hyperspectral image")))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.REPORT, self.tr("Run report"), self.tr("HTML files (*.html)"), optional=True,
            createByDefault=False))
        add_grid_outputs(self)
        self.addOutput(QgsProcessingOutputString(self.MODEL_USED, self.tr("Model used")))
        self.addOutput(QgsProcessingOutputString(self.METHOD_USED, self.tr("Method used")))
        self.addOutput(QgsProcessingOutputNumber(self.PSF_SIGMA, self.tr("Estimated PSF sigma [output pixels]")))
        self.addOutput(QgsProcessingOutputNumber(self.SNR_LR_DB, self.tr("Estimated LR-HSI SNR [dB]")))
        self.addOutput(QgsProcessingOutputString(self.EMPTY_BANDS, self.tr("Empty LR-HSI bands (written as nodata)")))

    def _fuse_options(self, parameters, context):
        """The FuseOptions fields the dialog sets (checked by the engine's ``FuseOptions``)."""
        overlap, batch = parameters.get(self.OVERLAP), parameters.get(self.BATCH_SIZE)
        return dict(
            device=self.parameterAsEnumString(parameters, self.DEVICE, context),
            tile=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            overlap=None if overlap in (None, "") else self.parameterAsInt(parameters, self.OVERLAP, context),
            batch_size=None if batch in (None, "") else self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            backend=self.parameterAsEnumString(parameters, self.BACKEND, context) or "auto",
            precision=self.parameterAsEnumString(parameters, self.PRECISION, context) or "float32",
            shift_correction=self.parameterAsBool(parameters, self.SHIFT_CORRECTION, context),
            dtype=self.parameterAsEnumString(parameters, self.DATA_TYPE, context),
            guard=self.parameterAsBool(parameters, self.GUARD, context),
            overwrite=True,
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Run the engine's ``fuse`` and return the outputs keyed by the output constants."""
        self.engine()
        from csakd_qgis.fusion.engine import fuse
        from csakd_qgis.quality.report import write_fuse_report

        output = raster_destination(self, parameters, context)
        sources = product_sources(self, parameters, context)
        inputs = (sources.pop("lr_hsi"), sources.pop("hr_msi"), output)
        model_file = (self.parameterAsFile(parameters, self.MODEL_FILE, context) or "").strip()
        what = dict(model=model_file or self.parameterAsEnumString(parameters, self.MODEL, context) or "auto",
                    method=self.parameterAsEnumString(parameters, self.METHOD, context))
        options = self._fuse_options(parameters, context)
        scheduler = (self.parameterAsString(parameters, self.SCHEDULER, context) or "").strip()
        if scheduler:
            cluster = self.run_engine(feedback, _fuse_on_cluster, *inputs, scheduler=scheduler, **what, **sources,
                                      **options)
            lines, report = cluster.summary_lines(), cluster.fuse
        else:
            report = self.run_engine(feedback, fuse, *inputs, **what, **sources, **options)
            lines = report.summary_lines()
        for line in lines:
            feedback.pushInfo(line)
        results = {
            self.OUTPUT: output,
            self.SCALE: report.scale,
            self.SHIFT_X: report.shift[0],
            self.SHIFT_Y: report.shift[1],
            self.MODEL_USED: report.model or report.method,
            self.METHOD_USED: report.method,
            self.PSF_SIGMA: report.degradation.get("sigma"),
            self.SNR_LR_DB: report.degradation.get("snr_lr_db"),
            self.EMPTY_BANDS: ",".join(map(str, report.empty_bands)),
        }
        html = self.parameterAsFileOutput(parameters, self.REPORT, context)
        if html:
            write_fuse_report(report, html)
            results[self.REPORT] = html
        return results


def _fuse_on_cluster(lr_hsi, hr_msi, output, *, scheduler, model, method, reporter, lr_mask, msi_mask, msi_bands,
                     **options):
    """``csakd_qgis.distributed.fuse_distributed`` on the Dask scheduler at ``scheduler`` with ``fuse``'s options."""
    from csakd_qgis.distributed import ClusterOptions, fuse_distributed, open_client

    cluster_options = ClusterOptions.build(model=model, method=method, msi_bands=msi_bands, **options)
    with open_client(scheduler) as client:
        return fuse_distributed(lr_hsi, hr_msi, output, client=client, options=cluster_options, reporter=reporter,
                                lr_mask=lr_mask, msi_mask=msi_mask)
