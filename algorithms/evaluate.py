"""``csakd:evaluate``: quality of a fused raster against a reference or against its own inputs."""

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .base import CsakdAlgorithm
from .parameters import add_product_inputs, layer_source, optional_layer_source, resolved_sources

#: Output name → description of every number the algorithm returns.
METRICS = {
    "PSNR": "PSNR [dB]", "SAM": "SAM [degrees]", "ERGAS": "ERGAS", "RMSE": "RMSE [data units]",
    "SSIM": "SSIM", "UIQI": "UIQI", "Q2N": "Q2n", "CC": "Correlation coefficient",
    "NR_PSNR_LR": "No-reference: PSNR of the fused image degraded to the LR-HSI [dB]",
    "NR_PSNR_MSI": "No-reference: PSNR of the fused image projected to the HR-MSI [dB]",
    "NR_SAM_LR": "No-reference: SAM against the LR-HSI [degrees]",
    "NR_SAM_MSI": "No-reference: SAM against the HR-MSI [degrees]",
    "NR_QNR": "No-reference: QNR", "NR_D_LAMBDA": "No-reference: spectral distortion D_lambda",
    "NR_D_S": "No-reference: spatial distortion D_s",
}


class EvaluateAlgorithm(CsakdAlgorithm):
    """Full-reference metrics and/or no-reference consistency, with an HTML report."""

    ID = "evaluate"
    DISPLAY = "Evaluate a fused hyperspectral image"

    REFERENCE, FUSED, LR_HSI, HR_MSI = "REFERENCE", "FUSED", "LR_HSI", "HR_MSI"
    SCALE, PEAK, SENSOR, BANDS, REPORT = "SCALE", "PEAK", "SENSOR", "BANDS", "REPORT"

    def initAlgorithm(self, config=None):  # noqa: N802
        """Declare parameters and outputs (one number output per metric)."""
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.FUSED, self.tr("Fused high-resolution hyperspectral image")))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.REFERENCE, self.tr("Reference HR-HSI on the same grid (for full-reference metrics)"),
            optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.LR_HSI, self.tr("LR-HSI input (for the no-reference check)"), optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.HR_MSI, self.tr("HR-MSI input (for the no-reference check)"), optional=True))
        # masks: the consistency check counts every pixel; the MSI's identity: SENSOR and BANDS below
        add_product_inputs(self, masks=False, msi_bands=False)
        self.addParameter(QgsProcessingParameterNumber(
            self.SCALE, self.tr("Scale (0 = from the LR-HSI grid, else 4)"),
            QgsProcessingParameterNumber.Integer, 0, False, 0, 16))
        self.addParameter(QgsProcessingParameterEnum(
            self.PEAK, self.tr("PSNR peak"), options=["range", "band_max"], defaultValue="range",
            usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterString(
            self.SENSOR, self.tr("HR-MSI sensor (no-reference check)"), defaultValue="sentinel2"))
        self.addParameter(QgsProcessingParameterString(
            self.BANDS, self.tr("HR-MSI bands (no-reference check)"), defaultValue="B2,B3,B4,B8"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.REPORT, self.tr("HTML report"), self.tr("HTML files (*.html)"), optional=True))
        for name, description in METRICS.items():
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(description)))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Run the engine's ``evaluate_rasters`` and return the numbers and the report."""
        self.engine()
        from csakd_qgis.quality.evaluation import evaluate_rasters

        report = self.parameterAsFileOutput(parameters, self.REPORT, context) or None
        inputs = resolved_sources(self, parameters, context, feedback, required=False)
        result = self.run_engine(
            feedback, evaluate_rasters,
            optional_layer_source(self, parameters, self.REFERENCE, context),
            layer_source(self, parameters, self.FUSED, context),
            lr_hsi=inputs["lr_hsi"],
            hr_msi=inputs["hr_msi"],
            scale=self.parameterAsInt(parameters, self.SCALE, context) or None,
            peak=self.parameterAsEnumString(parameters, self.PEAK, context),
            sensor=self.parameterAsString(parameters, self.SENSOR, context),
            bands=self.parameterAsString(parameters, self.BANDS, context).split(","),
            report_html=report,
        )
        values = result.flat()
        for name, value in values.items():
            feedback.pushInfo(f"{name}: {value:.6g}")
        outputs = {name: values[name] for name in METRICS if name in values}
        if report:
            outputs[self.REPORT] = report
        return outputs
