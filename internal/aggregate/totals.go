package aggregate

import (
	"strconv"

	"github.com/clickstream/pipeline/events"
)

// Totals are the four counters of a user, a product, or any set of events. The JSON
// names are those of the query API's answers.
type Totals struct {
	Clicks     int64 `json:"clicks"`
	PageViews  int64 `json:"page_views"`
	DwellMs    int64 `json:"dwell_ms"`
	DwellCount int64 `json:"dwell_count"`
}

// Add counts one event: the only place that says which counter an event type moves.
func (t *Totals) Add(e *events.Event) {
	switch e.Type {
	case events.Click:
		t.Clicks++
	case events.PageView:
		t.PageViews++
	case events.Dwell:
		t.DwellMs += e.DurationMs
		t.DwellCount++
	}
}

// Fields are the hash fields of Totals, in the order ParseTotals reads them: pass them
// to HMGET.
var Fields = []string{events.FieldClicks, events.FieldPageViews, events.FieldDwellMs, events.FieldDwellCount}

// ParseTotals reads the reply of an HMGET of Fields; a missing field is zero. A
// product's hash has no clicks field (its clicks are its score in the ranking), so
// its Clicks come back zero and the caller sets them from ZSCORE.
func ParseTotals(vals []any) Totals {
	var t Totals
	for i, dst := range [...]*int64{&t.Clicks, &t.PageViews, &t.DwellMs, &t.DwellCount} {
		if i >= len(vals) {
			break
		}
		if s, ok := vals[i].(string); ok {
			*dst, _ = strconv.ParseInt(s, 10, 64)
		}
	}
	return t
}
