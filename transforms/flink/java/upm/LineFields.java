package upm;

import java.io.Serializable;
import java.time.OffsetDateTime;
import java.time.format.DateTimeFormatter;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;

/**
 * The tenant and the event time of one input line, read on the Java side so that the job needs
 * one Python call per line (the keyed operator, which parses and validates the whole message,
 * state/parse.py). Only routing is decided here: a line this cannot read goes to the key and
 * time it was given for that; the keyed operator refuses any line whose tenant or time it reads
 * differently, so a valid message never depends on this reader agreeing with Python.
 *
 * <p>Never throws. The last line read is kept per thread: the timestamp assigner and the key step
 * (each with its own copy of the rules) run one after the other on the same line.
 */
public final class LineFields implements Serializable {
    private static final long serialVersionUID = 1L;
    private static final JsonFactory JSON = new JsonFactory();
    private static final ThreadLocal<Object[]> LAST = new ThreadLocal<>();

    private final String defaultTenant;
    private final String unreadKey;
    private final long minTimeMs;
    private final long maxTimeMs;

    public LineFields(String defaultTenant, String unreadKey, long minTimeMs, long maxTimeMs) {
        this.defaultTenant = defaultTenant;
        this.unreadKey = unreadKey;
        this.minTimeMs = minTimeMs;
        this.maxTimeMs = maxTimeMs;
    }

    /** The routing key: tenant_id (a string), the default tenant when it is absent or null. */
    public String tenant(String line) {
        return (String) read(line)[0];
    }

    /** window_end (observed_at for feedback) in epoch ms, or Long.MIN_VALUE (moves no watermark). */
    public long eventTime(String line) {
        return (Long) read(line)[1];
    }

    private Object[] read(String line) {
        Object[] last = LAST.get();
        if (last != null && sameRules((LineFields) last[2]) && line.equals(last[3])) {
            return last;
        }
        Object[] fields = {unreadKey, Long.MIN_VALUE, this, line};
        try {
            parse(line, fields);
        } catch (Exception | StackOverflowError e) {
            fields[0] = unreadKey;
            fields[1] = Long.MIN_VALUE;
        }
        LAST.set(fields);
        return fields;
    }

    private boolean sameRules(LineFields o) {
        return o == this || (o.minTimeMs == minTimeMs && o.maxTimeMs == maxTimeMs
                && o.defaultTenant.equals(defaultTenant) && o.unreadKey.equals(unreadKey));
    }

    private void parse(String line, Object[] fields) throws Exception {
        String tenant = defaultTenant;
        long windowEnd = Long.MIN_VALUE;
        long observedAt = Long.MIN_VALUE;
        boolean hasFeatures = false;
        boolean hasObservedAt = false;
        try (JsonParser p = JSON.createParser(line)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return;
            }
            JsonToken t;
            while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                JsonToken v = p.nextToken();
                switch (name) {
                    case "tenant_id":
                        tenant = v == JsonToken.VALUE_STRING ? p.getText()
                                : v == JsonToken.VALUE_NULL ? defaultTenant : unreadKey;
                        break;
                    case "window_end":
                        windowEnd = time(p, v);
                        break;
                    case "observed_at":
                        hasObservedAt = true;
                        observedAt = time(p, v);
                        break;
                    case "features":
                        hasFeatures = true;
                        break;
                    default:
                        break;
                }
                p.skipChildren();
            }
            if (t != JsonToken.END_OBJECT || p.nextToken() != null) {
                return;  // not one JSON object: the keyed operator dead-letters it
            }
        }
        fields[0] = tenant;
        fields[1] = !hasFeatures && hasObservedAt ? observedAt : windowEnd;
    }

    private long time(JsonParser p, JsonToken v) throws Exception {
        long ms;
        if (v == JsonToken.VALUE_NUMBER_INT) {
            if (p.getNumberType() != JsonParser.NumberType.INT
                    && p.getNumberType() != JsonParser.NumberType.LONG) {
                return Long.MIN_VALUE;
            }
            ms = p.getLongValue();
        } else if (v == JsonToken.VALUE_NUMBER_FLOAT) {
            double d = p.getDoubleValue();
            if (!Double.isFinite(d) || Math.abs(d) > 9.0e18) {
                return Long.MIN_VALUE;
            }
            ms = (long) d;  // toward zero, as Python's int()
        } else if (v == JsonToken.VALUE_STRING) {
            ms = rfc3339(p.getText());
        } else {
            return Long.MIN_VALUE;
        }
        return ms >= minTimeMs && ms <= maxTimeMs ? ms : Long.MIN_VALUE;
    }

    private static long rfc3339(String text) {
        String t = text.strip();
        if (t.endsWith("Z") || t.endsWith("z")) {
            t = t.substring(0, t.length() - 1) + "+00:00";
        }
        if (t.length() > 10 && t.charAt(10) == ' ') {
            t = t.substring(0, 10) + "T" + t.substring(11);
        }
        try {
            OffsetDateTime dt = OffsetDateTime.parse(t, DateTimeFormatter.ISO_OFFSET_DATE_TIME);
            long seconds = dt.toEpochSecond();
            long micros = dt.getNano() / 1000;  // Python's datetime keeps microseconds
            if (micros % 1000 == 0) {
                return seconds * 1000 + micros / 1000;
            }
            // As Python's round(dt.timestamp() * 1000): the same doubles, rounded half to even.
            return (long) Math.rint((seconds * 1_000_000 + micros) / 1e6 * 1000);
        } catch (RuntimeException e) {
            return Long.MIN_VALUE;
        }
    }
}
