package upm;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.types.Row;

/** A raw input line as (tenant key, line), the shape the keyed Python operator takes. */
public final class LineKey implements MapFunction<String, Row> {
    private static final long serialVersionUID = 1L;
    private final LineFields fields;

    public LineKey(LineFields fields) {
        this.fields = fields;
    }

    @Override
    public Row map(String line) {
        return Row.of(fields.tenant(line), line);
    }
}
