"""Training, evaluation and ONNX export of the visuomotor encoder and policy (torch, train
time only).
"""
