"""Generated wire messages of ``magma.orc8r`` (see streamer.proto); importing them skips grpc."""

from streamer.proto.streamer_pb2 import DataUpdate, DataUpdateBatch, StreamRequest

__all__ = ["DataUpdate", "DataUpdateBatch", "StreamRequest"]
