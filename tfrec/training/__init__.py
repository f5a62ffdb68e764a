"""Training machinery: devices/precision, callbacks, and the experiment runners."""
