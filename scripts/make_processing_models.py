"""Build the Processing models shipped in ``resources/processing_models/`` with the PyQGIS model API.

Run with the project's environment after changing an algorithm's parameters::

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/make_processing_models.py

* ``simulate_fuse_evaluate.model3``: a reference HR-HSI → ``csakd:simulate``
  → ``csakd:fuse`` → ``csakd:evaluate`` (fused raster and HTML report out);
* ``coregister_fuse.model3``: a real LR-HSI / HR-MSI pair → ``csakd:coregister``
  → ``csakd:fuse`` (shift corrected once, in the co-registration).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "resources" / "processing_models"
METHODS = ["student", "teacher", "bicubic", "gsa"]


def main() -> None:
    """Write both model files."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from qgis_app import registered_plugin

    registered_plugin()
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterEnum,
        QgsProcessingParameterNumber,
        QgsProcessingParameterRasterLayer,
    )

    def param(name):
        return [QgsProcessingModelChildParameterSource.fromModelParameter(name)]

    def static(value):
        return [QgsProcessingModelChildParameterSource.fromStaticValue(value)]

    def child_output(child_id, name):
        return [QgsProcessingModelChildParameterSource.fromChildOutput(child_id, name)]

    def child(algorithm, child_id, description, sources, outputs=()):
        step = QgsProcessingModelChildAlgorithm(algorithm)
        step.setChildId(child_id)
        step.setDescription(description)
        for name, source in sources.items():
            step.addParameterSources(name, source)
        exposed = {}
        for child_output_name, model_output_name, description in outputs:
            output = QgsProcessingModelOutput(model_output_name, description)
            output.setChildId(child_id)
            output.setChildOutputName(child_output_name)
            exposed[model_output_name] = output
        step.setModelOutputs(exposed)
        return step

    def add_parameter(model, definition):
        model.addModelParameter(definition, QgsProcessingModelParameter(definition.name()))

    method = QgsProcessingParameterEnum("method", "Fusion method", options=METHODS, defaultValue="student",
                                        usesStaticStrings=True)

    model = QgsProcessingModelAlgorithm("Simulate, fuse and evaluate", "CSAKD", "csakd_simulate_fuse_evaluate")
    add_parameter(model, QgsProcessingParameterRasterLayer("reference", "Reference HR-HSI (with wavelengths)"))
    add_parameter(model, QgsProcessingParameterNumber("scale", "Scale", QgsProcessingParameterNumber.Integer, 3,
                                                      False, 2, 16))
    add_parameter(model, method.clone())
    model.addChildAlgorithm(child("csakd:simulate", "simulate", "Simulate the LR-HSI / HR-MSI pair", {
        "REFERENCE": param("reference"), "SCALE": param("scale"), "SNR": static(40.0)}))
    model.addChildAlgorithm(child("csakd:fuse", "fuse", "Fuse", {
        "LR_HSI": child_output("simulate", "LR_HSI"), "HR_MSI": child_output("simulate", "HR_MSI"),
        "METHOD": param("method"), "SHIFT_CORRECTION": static(False)}, [("OUTPUT", "fused", "Fused HR-HSI")]))
    model.addChildAlgorithm(child("csakd:evaluate", "evaluate", "Evaluate against the reference", {
        "REFERENCE": child_output("simulate", "REFERENCE_OUT"), "FUSED": child_output("fuse", "OUTPUT"),
        "SCALE": param("scale")}, [("REPORT", "report", "Evaluation report (HTML)")]))
    model.updateDestinationParameters()
    model.toFile(str(OUT / "simulate_fuse_evaluate.model3"))

    model = QgsProcessingModelAlgorithm("Co-register and fuse", "CSAKD", "csakd_coregister_fuse")
    add_parameter(model, QgsProcessingParameterRasterLayer("lr_hsi", "Low-resolution hyperspectral image"))
    add_parameter(model, QgsProcessingParameterRasterLayer("hr_msi", "High-resolution multispectral image"))
    add_parameter(model, method.clone())
    model.addChildAlgorithm(child("csakd:coregister", "coregister", "Co-register (shift corrected)", {
        "LR_HSI": param("lr_hsi"), "HR_MSI": param("hr_msi"), "SHIFT_CORRECTION": static(True)},
        [("OUTPUT", "aligned", "Co-registered LR-HSI")]))
    model.addChildAlgorithm(child("csakd:fuse", "fuse", "Fuse", {
        "LR_HSI": child_output("coregister", "OUTPUT"), "HR_MSI": param("hr_msi"), "METHOD": param("method"),
        "SHIFT_CORRECTION": static(False)}, [("OUTPUT", "fused", "Fused HR-HSI")]))
    model.updateDestinationParameters()
    model.toFile(str(OUT / "coregister_fuse.model3"))


if __name__ == "__main__":
    main()
