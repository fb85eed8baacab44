"""``csakd:simulate``: an LR-HSI / HR-MSI pair from a reference HR-HSI (for training and evaluation)."""

from qgis.core import (
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .base import CsakdAlgorithm
from .parameters import layer_source, raster_destination

SENSORS = ("sentinel2", "sentinel2b", "landsat8", "landsat9")


class SimulateAlgorithm(CsakdAlgorithm):
    """Degrade a reference spectrally (sensor responses) and spatially (PSF, decimation)."""

    ID = "simulate"
    DISPLAY = "Simulate a hyperspectral / multispectral pair"

    REFERENCE, SENSOR, BANDS, SCALE, MTF = "REFERENCE", "SENSOR", "BANDS", "SCALE", "MTF"
    SNR, SHIFT_X, SHIFT_Y, SEED = "SNR", "SHIFT_X", "SHIFT_Y", "SEED"
    LR_HSI, HR_MSI, REFERENCE_OUT = "LR_HSI", "HR_MSI", "REFERENCE_OUT"

    def initAlgorithm(self, config=None):  # noqa: N802
        """Declare parameters and outputs."""
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.REFERENCE, self.tr("Reference hyperspectral image (with band wavelengths)")))
        self.addParameter(QgsProcessingParameterEnum(
            self.SENSOR, self.tr("Multispectral sensor"), options=list(SENSORS), defaultValue="sentinel2",
            usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterString(
            self.BANDS, self.tr("Multispectral bands (comma-separated)"), defaultValue="B2,B3,B4,B8"))
        self.addParameter(QgsProcessingParameterNumber(
            self.SCALE, self.tr("Scale (LR-HSI pixel / HR pixel)"), QgsProcessingParameterNumber.Integer,
            4, False, 2, 16))
        self.addParameter(QgsProcessingParameterNumber(
            self.MTF, self.tr("MTF of the LR sensor at Nyquist (Gaussian PSF)"),
            QgsProcessingParameterNumber.Double, 0.3, False, 0.01, 0.99))
        self.addParameter(QgsProcessingParameterNumber(
            self.SNR, self.tr("Noise: SNR [dB] (empty = none)"), QgsProcessingParameterNumber.Double,
            None, True, 0.0, 100.0))
        for name, label in ((self.SHIFT_X, "Misregistration of the LR-HSI east [LR pixels]"),
                            (self.SHIFT_Y, "Misregistration of the LR-HSI south [LR pixels]")):
            self.addParameter(QgsProcessingParameterNumber(
                name, self.tr(label), QgsProcessingParameterNumber.Double, 0.0, False, -5.0, 5.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.SEED, self.tr("Noise seed"), QgsProcessingParameterNumber.Integer, 0, False, 0))
        self.addParameter(QgsProcessingParameterRasterDestination(self.LR_HSI, self.tr("Simulated LR-HSI")))
        self.addParameter(QgsProcessingParameterRasterDestination(self.HR_MSI, self.tr("Simulated HR-MSI")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.REFERENCE_OUT, self.tr("Reference cropped to a multiple of the scale")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Run the engine's ``simulate_rasters``."""
        self.engine()
        from csakd_qgis.simulation.simulate import simulate_rasters

        outputs = {name: raster_destination(self, parameters, context, name)
                   for name in (self.LR_HSI, self.HR_MSI, self.REFERENCE_OUT)}
        snr = parameters.get(self.SNR)
        result = self.run_engine(
            feedback, simulate_rasters, layer_source(self, parameters, self.REFERENCE, context),
            outputs[self.LR_HSI], outputs[self.HR_MSI], outputs[self.REFERENCE_OUT],
            sensor=self.parameterAsEnumString(parameters, self.SENSOR, context),
            bands=[b.strip() for b in self.parameterAsString(parameters, self.BANDS, context).split(",")],
            scale=self.parameterAsInt(parameters, self.SCALE, context),
            mtf=self.parameterAsDouble(parameters, self.MTF, context),
            snr_db=None if snr in (None, "") else self.parameterAsDouble(parameters, self.SNR, context),
            shift=(self.parameterAsDouble(parameters, self.SHIFT_X, context),
                   self.parameterAsDouble(parameters, self.SHIFT_Y, context)),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            overwrite=True,
        )
        feedback.pushInfo(f"MSI bands {', '.join(result['msi_bands'])} ({result['srf_source']} responses); "
                          f"LR-HSI {result['lr_shape']}, reference {result['hr_shape']}")
        return outputs
