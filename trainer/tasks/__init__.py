"""Fine-tuning tasks: built-in offline ones and the JSONL path real users take."""
