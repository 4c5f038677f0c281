"""What a model looks at, as pictures: `panels` (the `Panel`s a method's `attention_panels`
returns; NumPy only) and `overlays` (renders panels over the model input as PNG; matplotlib).
The command is `python -m fgjax.predict --overlays`."""
