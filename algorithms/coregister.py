"""``csakd:coregister``: the LR-HSI on the grid aligned with the HR-MSI, sub-pixel shift corrected."""

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from .base import CsakdAlgorithm
from .parameters import add_grid_outputs, add_pair_inputs, add_product_inputs, raster_destination, resolved_sources


class CoregisterAlgorithm(CsakdAlgorithm):
    """Put the LR-HSI on a grid exactly ``scale`` times coarser than (and aligned with) the HR-MSI."""

    ID = "coregister"
    DISPLAY = "Co-register a hyperspectral image to a multispectral grid"

    LR_HSI, HR_MSI, SCALE, SHIFT_CORRECTION, OUTPUT = "LR_HSI", "HR_MSI", "SCALE", "SHIFT_CORRECTION", "OUTPUT"
    SHIFT_X, SHIFT_Y, SHIFT_RELIABLE, NOTES = "SHIFT_X", "SHIFT_Y", "SHIFT_RELIABLE", "NOTES"

    def initAlgorithm(self, config=None):  # noqa: N802
        """Declare parameters and outputs."""
        add_pair_inputs(self)
        add_product_inputs(self, msi_bands=False)  # the shift fit finds the MSI's spectral responses itself
        self.addParameter(QgsProcessingParameterNumber(
            self.SCALE, self.tr("Scale (HR-MSI pixels per LR-HSI pixel; 0 = from the resolutions)"),
            QgsProcessingParameterNumber.Integer, 0, False, 0, 16))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT, self.tr("Co-registered LR-HSI")))
        add_grid_outputs(self)
        self.addOutput(QgsProcessingOutputNumber(
            self.SHIFT_RELIABLE, self.tr("Shift estimate reliable (1) or too weak to use (0)")))
        self.addOutput(QgsProcessingOutputString(self.NOTES, self.tr("What was done to the grids")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Run the engine's ``coregister`` and return the aligned raster and the shift."""
        self.engine()
        from csakd_qgis.geo.coregister import coregister

        output = raster_destination(self, parameters, context)
        scale = self.parameterAsInt(parameters, self.SCALE, context)
        inputs = resolved_sources(self, parameters, context, feedback)
        report = self.run_engine(
            feedback, coregister, inputs["lr_hsi"], inputs["hr_msi"], output,
            scale=scale or None,
            shift_correction=self.parameterAsBool(parameters, self.SHIFT_CORRECTION, context),
            overwrite=True,
            lr_masks=inputs["lr_masks"],
            msi_masks=inputs["msi_masks"],
        )
        shift = report.shift
        for note in report.notes:
            feedback.pushInfo(note)
        if shift is not None:
            feedback.pushInfo(f"Shift: {shift.dx:+.3f}, {shift.dy:+.3f} LR pixels (east, south); {shift.message}")
        return {
            self.OUTPUT: output,
            self.SCALE: report.scale,
            self.SHIFT_X: shift.dx if shift is not None else 0.0,
            self.SHIFT_Y: shift.dy if shift is not None else 0.0,
            self.SHIFT_RELIABLE: int(bool(shift is not None and shift.reliable)),
            self.NOTES: " ".join(report.notes),
        }
