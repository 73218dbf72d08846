package projections

// The API secrets report: a table of the secrets a user can reach, newest
// first, with filters on each column. Its data is the secrets projection
// (secrets.go): the user's access set gives the ids in order, the secret
// documents the columns.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Report page sizes.
const (
	DefaultPageSize = 30
	MaxPageSize     = 200
)

// ReportQuery filters and pages the report. Zero values do not filter.
type ReportQuery struct {
	// Shared keeps secrets with (true) or without (false) any grant.
	Shared *bool
	// Q keeps secrets whose name, URL or a tag contains it, ignoring case.
	Q string
	// Owner keeps secrets whose owner has this id, or whose owner's name
	// contains it, ignoring case.
	Owner string
	// Tag keeps secrets that have exactly this tag.
	Tag string
	// Status keeps secrets with this status: "enabled" or "disabled".
	Status string
	// Page is 1-based; 0 means 1.
	Page int
	// PageSize is 0 for DefaultPageSize and at most MaxPageSize.
	PageSize int
}

// ReportPage is one page of the report.
type ReportPage struct {
	Items []ReportRow `json:"items"`
	// Total counts the rows that pass the filters, on every page.
	Total int `json:"total"`
}

// ReportRow is one row of the report.
type ReportRow struct {
	ID       string     `json:"id"`
	Name     string     `json:"name"`
	URL      string     `json:"url"`
	Tags     []string   `json:"tags"`
	Shared   bool       `json:"shared"`
	Owner    Person     `json:"owner"`
	LastUsed *time.Time `json:"lastUsed"`
	Status   string     `json:"status"`
}

func (q ReportQuery) filtered() bool {
	return q.Shared != nil || q.Q != "" || q.Owner != "" || q.Tag != "" || q.Status != ""
}

// window is the page's index range [start, end) among the rows.
func (q ReportQuery) window() (start, end int) {
	page, size := max(q.Page, 1), q.PageSize
	if size <= 0 {
		size = DefaultPageSize
	}
	size = min(size, MaxPageSize)
	start = (page - 1) * size
	return start, start + size
}

func (q ReportQuery) match(d *secretDoc) bool {
	if q.Shared != nil && *q.Shared != d.shared() {
		return false
	}
	if q.Status != "" && q.Status != d.Status {
		return false
	}
	if q.Tag != "" && !slices.Contains(d.Tags, q.Tag) {
		return false
	}
	if q.Owner != "" && q.Owner != d.Owner.ID && !containsFold(d.Owner.Name, q.Owner) {
		return false
	}
	if q.Q != "" && !containsFold(d.Name, q.Q) && !containsFold(d.URL, q.Q) &&
		!slices.ContainsFunc(d.Tags, func(t string) bool { return containsFold(t, q.Q) }) {
		return false
	}
	return true
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

func reportRow(d *secretDoc) ReportRow {
	return ReportRow{ID: d.ID, Name: d.Name, URL: d.URL, Tags: d.tags(), Shared: d.shared(),
		Owner: d.Owner, LastUsed: d.LastUsed, Status: d.Status}
}

// Report returns one page of the secrets userID can reach, newest first.
// An unfiltered page costs two round trips whatever the user has; a
// filtered one reads all the user's documents (two round trips too, with
// the reads chunked).
func (r *Reader) Report(ctx context.Context, userID string, q ReportQuery) (ReportPage, error) {
	start, end := q.window()
	page := ReportPage{Items: []ReportRow{}}
	if !q.filtered() {
		key := r.keys.access(userID)
		pipe := r.rdb.Pipeline()
		total := pipe.ZCard(ctx, key)
		ids := pipe.ZRevRange(ctx, key, int64(start), int64(end-1))
		if _, err := pipe.Exec(ctx); err != nil {
			return ReportPage{}, fmt.Errorf("report of %s: %w", userID, err)
		}
		docs, err := r.docs(ctx, ids.Val())
		if err != nil {
			return ReportPage{}, fmt.Errorf("report of %s: %w", userID, err)
		}
		for _, d := range docs {
			page.Items = append(page.Items, reportRow(d))
		}
		page.Total = int(total.Val())
		return page, nil
	}

	ids, err := r.accessible(ctx, userID)
	if err != nil {
		return ReportPage{}, fmt.Errorf("report: %w", err)
	}
	docs, err := r.docs(ctx, ids)
	if err != nil {
		return ReportPage{}, fmt.Errorf("report of %s: %w", userID, err)
	}
	for _, d := range docs {
		if !q.match(d) {
			continue
		}
		if page.Total >= start && page.Total < end {
			page.Items = append(page.Items, reportRow(d))
		}
		page.Total++
	}
	return page, nil
}
