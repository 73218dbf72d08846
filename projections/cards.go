package projections

// The home page cards: one card per secret the user can reach, newest
// first; a shared card shows "Shared". Its data is the secrets projection
// (secrets.go).

import (
	"context"
	"fmt"
)

// CardTypeAPISecret is the type of a card showing an API secret.
const CardTypeAPISecret = "apiSecret"

// Card is one card of the home page.
type Card struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	Tags   []string `json:"tags"`
	Owner  Person   `json:"owner"`
	Shared bool     `json:"shared"`
}

// Cards returns a card for every secret userID can reach, newest first, in
// two round trips.
func (r *Reader) Cards(ctx context.Context, userID string) ([]Card, error) {
	ids, err := r.accessible(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("cards: %w", err)
	}
	docs, err := r.docs(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("cards of %s: %w", userID, err)
	}
	cards := make([]Card, 0, len(docs))
	for _, d := range docs {
		cards = append(cards, Card{ID: d.ID, Name: d.Name, Type: CardTypeAPISecret, Tags: d.tags(),
			Owner: d.Owner, Shared: d.shared()})
	}
	return cards, nil
}
