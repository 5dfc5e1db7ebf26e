"""Deployment: exporting the cascade's nets to ONNX, OpenVINO IR and ncnn (`export`), and
running exported nets behind one interface (`runtimes`)."""
