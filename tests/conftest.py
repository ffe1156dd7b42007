import os

# Every lossless pass is checked against the reference outputs inside compile() during tests.
os.environ.setdefault("HEWN_VERIFY_EACH_PASS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
