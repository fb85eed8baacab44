"""``csakd:train``: a model for the user's own sensor pair (scene-adaptive, or supervised from a reference)."""

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .base import CsakdAlgorithm
from .parameters import add_device_parameter, add_product_inputs, resolved_sources
from .simulate import SENSORS

MODES = ("kd", "student", "teacher")
#: csakd_qgis.training.config.PRESET_FAMILIES, repeated so that the dialog can be built without the engine's torch.
PRESET_FAMILIES = ("project", "project_small", "paper")


class TrainAlgorithm(CsakdAlgorithm):
    """KD co-training of a teacher and a student; the student's file is the output."""

    ID = "train"
    DISPLAY = "Train a fusion model"

    LR_HSI, HR_MSI, REFERENCE = "LR_HSI", "HR_MSI", "REFERENCE"
    SENSOR, BANDS, SCALE, MODE, TIME_BUDGET, STEPS = "SENSOR", "BANDS", "SCALE", "MODE", "TIME_BUDGET", "STEPS"
    SEED, OUTPUT, VAL_PSNR, VAL_SAM, DEVICE = "SEED", "OUTPUT", "VAL_PSNR", "VAL_SAM", "DEVICE"
    CLASSICAL_METHOD, CLASSICAL_PSNR, GAIN = "CLASSICAL_METHOD", "CLASSICAL_PSNR", "GAIN_OVER_CLASSICAL"
    PRESET, PATIENCE = "PRESET", "PATIENCE"

    def initAlgorithm(self, config=None):  # noqa: N802
        """Declare parameters and outputs."""
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.LR_HSI, self.tr("Scene-adaptive: LR-HSI (co-registered with the HR-MSI)"), optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.HR_MSI, self.tr("Scene-adaptive: HR-MSI"), optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.REFERENCE, self.tr("Supervised: reference HR-HSI to simulate pairs from"), optional=True))
        add_product_inputs(self, layers=(self.LR_HSI, self.HR_MSI, self.REFERENCE), msi_bands=False)
        self.addParameter(QgsProcessingParameterEnum(
            self.SENSOR, self.tr("Supervised: multispectral sensor to simulate"), options=list(SENSORS),
            defaultValue="sentinel2", usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterString(
            self.BANDS, self.tr("Supervised: multispectral bands"), defaultValue="B2,B3,B4,B8"))
        self.addParameter(QgsProcessingParameterNumber(
            self.SCALE, self.tr("Scale (0 = from the scene's resolutions; needed when supervised)"),
            QgsProcessingParameterNumber.Integer, 0, False, 0, 16))
        self.addParameter(QgsProcessingParameterEnum(
            self.MODE, self.tr("Training"), options=list(MODES), defaultValue="kd", usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.PRESET, self.tr("Model sizes (project: CPU-sized; project_small: a 6x cheaper student; "
                                 "paper: the authors', scale 4 only)"),
            options=list(PRESET_FAMILIES), defaultValue="project", usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.TIME_BUDGET, self.tr("Time budget [seconds] (0 = use the number of steps)"),
            QgsProcessingParameterNumber.Double, 600.0, False, 0.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.STEPS, self.tr("Steps (when no time budget)"), QgsProcessingParameterNumber.Integer, 300,
            False, 1))
        self.addParameter(QgsProcessingParameterNumber(
            self.PATIENCE, self.tr("Early stopping: validations without improvement before stopping (0 = off)"),
            QgsProcessingParameterNumber.Integer, 0, True, 0))
        add_device_parameter(self)
        self.addParameter(QgsProcessingParameterNumber(
            self.SEED, self.tr("Random seed"), QgsProcessingParameterNumber.Integer, 0, False, 0))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, self.tr("Model file"), self.tr("CSAKD models (*.safetensors)")))
        self.addOutput(QgsProcessingOutputNumber(self.VAL_PSNR, self.tr("Best validation PSNR [dB]")))
        self.addOutput(QgsProcessingOutputNumber(self.VAL_SAM, self.tr("Best validation SAM [degrees]")))
        self.addOutput(QgsProcessingOutputString(self.CLASSICAL_METHOD,
                                                 self.tr("Strongest classical method on the validation rows")))
        self.addOutput(QgsProcessingOutputNumber(self.CLASSICAL_PSNR,
                                                 self.tr("Its validation PSNR [dB]")))
        self.addOutput(QgsProcessingOutputNumber(self.GAIN, self.tr("Network gain over it [dB] (auto uses the "
                                                                    "network only above 0)")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Build the training data, train, and return the model file."""
        self.engine()
        from csakd_qgis.errors import InputError
        from csakd_qgis.training import TrainConfig, train
        from csakd_qgis.training.baseline import scores_line
        from csakd_qgis.training.data import reference_data, scene_data

        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        inputs = resolved_sources(self, parameters, context, feedback, required=False)
        lr, msi, reference = inputs["lr_hsi"], inputs["hr_msi"], inputs["reference"]
        scale = self.parameterAsInt(parameters, self.SCALE, context) or None

        def load(reporter):
            reporter.check()
            if reference is not None and lr is None and msi is None:
                if scale is None:
                    raise InputError("supervised training from a reference needs the scale to simulate")
                return reference_data(
                    reference, sensor=self.parameterAsEnumString(parameters, self.SENSOR, context),
                    bands=self.parameterAsString(parameters, self.BANDS, context).split(","), scale=scale,
                    seed=self.parameterAsInt(parameters, self.SEED, context))
            if lr is not None and msi is not None and reference is None:
                return scene_data(lr, msi, scale=scale, lr_masks=inputs["lr_masks"], msi_masks=inputs["msi_masks"])
            raise InputError("give either the LR-HSI and HR-MSI of a scene (scene-adaptive training, no "
                             "reference needed) or a reference HR-HSI (supervised), not both")

        data = self.run_engine(feedback, load)
        budget = self.parameterAsDouble(parameters, self.TIME_BUDGET, context)
        config = TrainConfig(mode=self.parameterAsEnumString(parameters, self.MODE, context),
                             preset=self.parameterAsEnumString(parameters, self.PRESET, context),
                             steps=self.parameterAsInt(parameters, self.STEPS, context),
                             time_budget_s=budget or None, seed=self.parameterAsInt(parameters, self.SEED, context),
                             device=self.parameterAsEnumString(parameters, self.DEVICE, context),
                             patience=self.parameterAsInt(parameters, self.PATIENCE, context) or None)
        report = self.run_engine(feedback, train, data, config, out)
        feedback.pushInfo(f"Trained {report.steps} steps in {report.seconds:.0f} s on {report.device}; "
                          f"saved {report.model_path}" + (f" and {report.teacher_path}" if report.teacher_path else ""))
        classical = report.classical or {}
        if classical:
            feedback.pushInfo(scores_line(classical))
        return {self.OUTPUT: report.model_path, self.VAL_PSNR: report.best_metrics.get("psnr"),
                self.VAL_SAM: report.best_metrics.get("sam"), self.CLASSICAL_METHOD: classical.get("method"),
                self.CLASSICAL_PSNR: classical.get("psnr"), self.GAIN: classical.get("gain_db")}
