"""Training the top: stem features (live or cached), batches, the loop and its step,
the device and precision, warm starts. Import from the modules themselves."""
