package redistest

import (
	"context"
	"strings"
	"testing"
)

func TestCleanupDeletesOnlyItsPrefix(t *testing.T) {
	ctx := context.Background()
	outer, outerPrefix := New(t)
	mine := outerPrefix + "mine"
	if err := outer.Set(ctx, mine, "keep", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var inner string
	t.Run("inner", func(t *testing.T) {
		c, prefix := New(t)
		inner = prefix
		if !strings.HasPrefix(prefix, "mysafetest:") || prefix == outerPrefix {
			t.Fatalf("prefix %q: want a fresh mysafetest: prefix", prefix)
		}
		if err := c.Set(ctx, prefix+"a", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	})
	// With a shared Redis both tests used the same server: the inner
	// cleanup removed its keys and left ours. (With miniredis each test has
	// its own server and this holds trivially.)
	if n, err := outer.Exists(ctx, inner+"a").Result(); err != nil || n != 0 {
		t.Errorf("inner key after cleanup: %d, %v; want gone", n, err)
	}
	if v, err := outer.Get(ctx, mine).Result(); err != nil || v != "keep" {
		t.Errorf("outer key: %q, %v; want it kept", v, err)
	}
}

func TestDeletePrefixTakesThePrefixLiterally(t *testing.T) {
	ctx := context.Background()
	c, prefix := New(t)
	// Unescaped, the pattern "[x]:*" would also match "x:b".
	for _, k := range []string{"[x]:a", "x:b"} {
		if err := c.Set(ctx, prefix+k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := DeletePrefix(ctx, c, prefix+"[x]:"); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Exists(ctx, prefix+"[x]:a").Result(); n != 0 {
		t.Error(`"[x]:a" survived`)
	}
	if n, _ := c.Exists(ctx, prefix+"x:b").Result(); n != 1 {
		t.Error(`"x:b" was deleted by the prefix "[x]:"`)
	}
}
