"""Stand-in for Slicer's SampleData module."""

from slicer.standin import record


class SampleDataLogic:
    @staticmethod
    def registerCustomSampleDataSource(**kwargs) -> None:
        record("registerCustomSampleDataSource", kwargs.get("sampleName"))
