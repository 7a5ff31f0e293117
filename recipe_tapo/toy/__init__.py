"""A toy math task small models learn in minutes on a CPU, for the toy TAPO-vs-GRPO experiment."""
