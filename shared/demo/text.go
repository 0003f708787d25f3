package demo

import (
	"fmt"
	"strings"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// textKind selects the flavour of a room's texts.
type textKind int

const (
	textChat textKind = iota
	textDev
	textAnnouncement
)

var (
	things = []string{
		"the build", "the deploy", "staging", "the export job", "the new dashboard", "CI",
		"the API", "the database migration", "the on-call rotation", "the release", "the customer report",
		"the invoice run", "the mobile app", "the search index", "the websocket gateway", "the demo",
		"the onboarding doc", "the Q3 roadmap", "the sprint board", "the coffee machine",
	}
	states = []string{
		"is green again", "looks flaky today", "is blocked on review", "finished in 12 minutes",
		"needs another look", "is ready for QA", "broke after the last merge", "is back to normal",
		"is slower than yesterday", "shipped to production", "has a weird timeout", "passed all checks",
		"is on fire 🔥", "got a lot better", "is waiting for feedback", "will be late by a day",
	}
	openers = []string{
		"", "", "", "FYI ", "Heads up: ", "Quick update: ", "Hmm, ", "Good news: ", "Not sure, but ",
		"Looks like ", "Reminder: ", "Honestly, ", "So ", "Update: ",
	}
	questions = []string{
		"Can someone review %s?", "Who owns %s?", "Any idea why %s %s?", "Should we move %s to next sprint?",
		"Is anyone else seeing issues with %s?", "Did anyone check %s today?", "What's the status of %s?",
	}
	shorts = []string{
		"👍", "lol", "on it", "thanks!", "+1", "ok", "sounds good", "done ✅", "brb", "LGTM", "🎉🎉🎉",
		"yes", "no idea", ":thumbsup:", "agreed", "nice!", "😂", "will do", "ack", "see you tomorrow 👋",
	}
	casual = []string{
		"Lunch at the Thai place?", "Who's up for coffee ☕?", "Happy Friday everyone!",
		"Anyone watched the game last night?", "The office plants need water again 🌱",
		"Reminder that it's someone's birthday today 🎂", "I brought cookies, kitchen, first come first served 🍪",
		"Has anyone seen my charger?", "Weekend plans?", "Good morning!", "Back from vacation 🏖️",
	}
	codeSnippets = []string{
		"make test", "go test ./... -race", "kubectl rollout restart deploy/gateway", "SELECT count(*) FROM exports;",
		"git rebase -i main", "nats stream info CHAT_MESSAGES", "docker compose up -d", "curl -H 'X-Auth-Token: …' /api/v1/me",
		"grep -rn TODO .", "mc ls local/dataport-exports",
	}
	slugs = []string{"exports", "on-call", "release-process", "deploys", "incident-42", "style-guide", "nats", "minio"}
	// tricky texts probe escaping and encoding in every export format.
	tricky = []string{
		"<script>alert(1)</script>",
		"<img src=x onerror=alert(1)>",
		"Grüße aus München — naïve café, résumé, Ærøskøbing",
		"日本語のメッセージです。よろしくお願いします。",
		"Привет, как дела? Всё хорошо.",
		"مرحبا بالعالم — right-to-left text",
		"emoji storm 😀😃😄😁😆😅😂🤣 and a family 👨‍👩‍👧‍👦 and flags 🇩🇪🇯🇵",
		"line one\nline two\n\nline four after a blank line",
		"=SUM(1+2)*cmd|' /C calc'!A0",
		`"quoted", comma, 'single' quotes & an ampersand; semicolon`,
		"tab\tseparated\tvalues",
		"]]> </message> &amp; &lt;b&gt; not bold &lt;/b&gt;",
		"{\"json\": \"inside a message\", \"n\": 1}",
		"windows line ending\r\nsecond line",
		"a # hash, a % percent, a \\ backslash and a / slash",
	}
	releaseNotes = []string{
		"faster exports", "PDF rendering fixes", "a new dark mode", "better search", "scheduled exports",
		"email notifications", "improved audit logs", "SSO support",
	}
	announcements = []string{
		"📣 *Release %s* is out: %s. Details in the [changelog](https://docs.dataport.local/changelog).",
		"Maintenance window on Saturday from 02:00 to 04:00 UTC. Exports will queue and resume afterwards.",
		"Please welcome our new colleague to the team! 🎉",
		"Reminder: all-hands on Friday at 16:00 UTC.",
		"Office closed on Monday for the public holiday.",
		"*Security notice*: rotate your API keys before the end of the month. See https://docs.dataport.local/security",
		"The quarterly report is ready; ask your manager for access.",
	}
)

// text writes one message body for author in a room of the given kind.
func (g *generator) text(kind textKind, members []*sourcev1.User, author int) string {
	if g.chance(0.006) {
		return pick(g, tricky)
	}
	if kind == textAnnouncement && author == 0 {
		a := pick(g, announcements)
		if strings.Contains(a, "%s") {
			a = fmt.Sprintf(a, fmt.Sprintf("v1.%d.%d", g.r.IntN(20), g.r.IntN(10)), pick(g, releaseNotes))
		}
		return a
	}
	switch n := g.r.IntN(100); {
	case n < 14:
		return pick(g, shorts)
	case n < 24 && kind != textDev:
		return pick(g, casual)
	case n < 34:
		q := pick(g, questions)
		if strings.Count(q, "%s") == 2 {
			return fmt.Sprintf(q, pick(g, things), pick(g, states))
		}
		return fmt.Sprintf(q, pick(g, things))
	case n < 44:
		other := g.r.IntN(len(members))
		if other == author {
			other = (other + 1) % len(members)
		}
		return fmt.Sprintf("@%s %s", members[other].GetUsername(), g.sentence())
	case n < 56:
		return g.markdown()
	default:
		s := g.sentence()
		if g.chance(0.35) {
			if !strings.ContainsAny(s[len(s)-1:], ".!?") {
				s += "."
			}
			s += " " + g.sentence()
		}
		return s
	}
}

// sentence is a plain statement like "Heads up: the build is flaky today."
func (g *generator) sentence() string {
	s := pick(g, openers) + pick(g, things) + " " + pick(g, states)
	s = strings.ToUpper(s[:1]) + s[1:]
	return s + pick(g, []string{".", ".", "!", "...", ""})
}

// markdown is a message using Rocket.Chat's markdown.
func (g *generator) markdown() string {
	switch g.r.IntN(7) {
	case 0:
		return fmt.Sprintf("*%s* %s", strings.TrimSuffix(pick(g, states), "."), pick(g, []string{"again", "today", "for real", "— finally"}))
	case 1:
		return fmt.Sprintf("Try `%s` first", pick(g, codeSnippets))
	case 2:
		return fmt.Sprintf("See https://docs.dataport.local/%s for details", pick(g, slugs))
	case 3:
		return fmt.Sprintf("The [runbook](https://wiki.dataport.local/runbooks/%s) covers %s", pick(g, slugs), pick(g, things))
	case 4:
		return fmt.Sprintf("```\n$ %s\n%s\n```", pick(g, codeSnippets), pick(g, []string{"ok", "PASS", "exit status 1", "done in 3.2s"}))
	case 5:
		return fmt.Sprintf("~~%s~~ _%s_", g.sentence(), pick(g, states))
	default:
		return "> " + g.sentence() + "\n" + pick(g, shorts)
	}
}
