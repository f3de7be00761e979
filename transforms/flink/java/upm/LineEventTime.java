package upm;

import org.apache.flink.api.common.eventtime.SerializableTimestampAssigner;

/** A raw input line's event time (LineFields), for the job's watermark strategy. */
public final class LineEventTime implements SerializableTimestampAssigner<String> {
    private static final long serialVersionUID = 1L;
    private final LineFields fields;

    public LineEventTime(LineFields fields) {
        this.fields = fields;
    }

    @Override
    public long extractTimestamp(String line, long recordTimestamp) {
        return fields.eventTime(line);
    }
}
