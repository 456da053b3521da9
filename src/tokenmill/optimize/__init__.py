"""The optimization toolkit: quantize, prune, distill and export a model, each run
writing a servable directory and a quality report (base vs result)."""
