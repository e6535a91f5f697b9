"""Topic templates for demo memories: short agent-like texts whose topics make semantic search meaningful."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    """One subject area: slot values and, per event type, templates that use them."""

    name: str
    slots: dict[str, tuple[str, ...]]
    templates: dict[str, tuple[str, ...]]


TOPICS: tuple[Topic, ...] = (
    Topic("travel", {
        "city": ("Lisbon", "Oslo", "Kyoto", "Montreal", "Nairobi", "Valencia", "Reykjavik", "Hanoi"),
        "seat": ("an aisle seat", "a window seat", "extra legroom", "a seat near the front"),
        "month": ("March", "June", "September", "December"),
    }, {
        "UserMessage": ("Book me a flight to {city} in {month}, I prefer {seat}.",
                        "Find a quiet hotel in {city} close to the old town for three nights.",
                        "Is a train from the airport to central {city} faster than a taxi?"),
        "ToolResult": ("flight_search: 4 flights to {city} in {month}, cheapest 212 EUR with one stop.",
                       "hotel_search: 12 hotels in {city}, best rated one is a 10 minute walk from the station."),
        "Observation": ("The user always asks for {seat} on long flights.",
                        "The user is planning a trip to {city} in {month} and dislikes early departures."),
    }),
    Topic("billing", {
        "plan": ("the Pro plan", "the Team plan", "the annual plan", "the starter plan"),
        "amount": ("49 USD", "120 EUR", "9.99 GBP", "300 USD"),
        "card": ("a Visa card", "a company Mastercard", "a debit card"),
    }, {
        "UserMessage": ("Why was I charged {amount} twice this month on {card}?",
                        "Please cancel {plan} at the end of the billing period.",
                        "Can I get an invoice for {amount} with our VAT number on it?"),
        "ToolResult": ("billing_lookup: two charges of {amount} found, the second one is a pending authorisation.",
                       "subscription_api: {plan} will end at the close of the current cycle, refund not due."),
        "Observation": ("The customer pays with {card} and is sensitive about duplicate charges.",
                        "The account is on {plan} and asked about downgrading twice."),
    }),
    Topic("cooking", {
        "dish": ("a vegetarian lasagna", "a Thai green curry", "sourdough bread", "a lemon tart", "ramen"),
        "diet": ("no peanuts", "gluten free", "vegan", "low salt"),
        "people": ("four people", "two people", "a party of ten"),
    }, {
        "UserMessage": ("Give me a recipe for {dish} for {people}, it must be {diet}.",
                        "What can I use instead of eggs when baking {dish}?",
                        "How long should {dish} rest before serving?"),
        "ToolResult": ("recipe_search: 7 recipes for {dish}, top one takes 45 minutes and is {diet}.",
                       "nutrition_api: one serving of {dish} has about 540 kcal."),
        "Observation": ("The user cooks for {people} on weekends and needs meals that are {diet}.",
                        "The user enjoyed the recipe for {dish} and wants similar ones."),
    }),
    Topic("deployment", {
        "service": ("the payments API", "the search indexer", "the auth gateway", "the nightly ETL job"),
        "env": ("staging", "production", "the EU cluster"),
        "issue": ("a memory leak", "slow database queries", "a failing health check", "TLS certificate expiry"),
    }, {
        "UserMessage": ("Roll back {service} in {env}, latency doubled after the last release.",
                        "Why does {service} keep restarting in {env}?",
                        "Schedule a deploy of {service} to {env} after business hours."),
        "ToolResult": ("kubectl: {service} in {env} restarted 14 times in the last hour, exit code 137.",
                       "grafana_query: p99 latency of {service} in {env} rose from 180 ms to 950 ms."),
        "Observation": ("{service} in {env} suffers from {issue}; the on-call engineer was paged.",
                        "Deploys of {service} to {env} usually happen on Tuesday evenings."),
    }),
    Topic("health", {
        "activity": ("running", "swimming", "cycling", "yoga", "weight training"),
        "goal": ("a half marathon", "better sleep", "losing five kilos", "lower blood pressure"),
        "time": ("early mornings", "lunch breaks", "evenings"),
    }, {
        "UserMessage": ("Make me a training plan for {goal} with {activity} three times a week.",
                        "My knee hurts after {activity}, should I take a break?",
                        "Remind me to stretch after {activity} in the {time}."),
        "ToolResult": ("fitness_tracker: 3 {activity} sessions this week, 142 minutes in total.",
                       "sleep_api: average sleep 6 h 10 min over the last 7 nights."),
        "Observation": ("The user trains in {time} and is working towards {goal}.",
                        "The user prefers {activity} over other kinds of exercise."),
    }),
    Topic("gardening", {
        "plant": ("tomatoes", "basil", "roses", "an olive tree", "strawberries", "chillies"),
        "problem": ("yellow leaves", "aphids", "root rot", "powdery mildew"),
        "place": ("the balcony", "a raised bed", "the greenhouse", "a shady corner"),
    }, {
        "UserMessage": ("My {plant} on {place} have {problem}, what should I do?",
                        "When is the best time to plant {plant} in {place}?",
                        "How often should I water {plant} in summer?"),
        "ToolResult": ("plant_doctor: {problem} on {plant} is most likely caused by overwatering.",
                       "weather_api: frost expected tonight, cover {plant} on {place}."),
        "Observation": ("The user grows {plant} on {place} and struggled with {problem} last season.",
                        "The user waters the garden every second evening."),
    }),
    Topic("music", {
        "instrument": ("the piano", "the guitar", "the violin", "drums"),
        "genre": ("jazz", "baroque music", "indie rock", "bossa nova", "film scores"),
        "artist": ("Nina Simone", "Bach", "Radiohead", "Joao Gilberto", "Hans Zimmer"),
    }, {
        "UserMessage": ("Recommend some {genre} similar to {artist}.",
                        "Find easy pieces to learn on {instrument} in the style of {genre}.",
                        "Make a playlist of {genre} for focused work."),
        "ToolResult": ("music_api: playlist created with 25 {genre} tracks, 1 h 42 min.",
                       "concert_search: {artist} tribute concert next Friday, tickets from 35 EUR."),
        "Observation": ("The user is learning {instrument} and loves {genre}.",
                        "The user listens to {artist} while working."),
    }),
    Topic("databases", {
        "db": ("Postgres", "the analytics warehouse", "the Redis cache", "the orders database"),
        "symptom": ("lock contention", "a full disk", "replication lag", "a missing index"),
        "table": ("orders", "customers", "events", "invoices"),
    }, {
        "UserMessage": ("Queries on the {table} table in {db} got slow, can you check for {symptom}?",
                        "Add an index on {table}.created_at in {db}.",
                        "How big is the {table} table in {db} now?"),
        "ToolResult": ("sql_runner: {table} in {db} has 48 million rows and 31 GB on disk.",
                       "explain_analyze: sequential scan on {table}, 2.4 s; {symptom} suspected."),
        "Observation": ("{db} had {symptom} twice this week, both times around the nightly batch.",
                        "The team wants {table} in {db} partitioned by month."),
    }),
)

EVENT_TYPES = ("UserMessage", "ToolResult", "Observation")
# Topic-neutral endings, so that two memories from one template rarely read the same.
ASIDES = ("Mentioned again today.", "Noted during the weekly check-in.", "Confirmed by the user.",
          "Follow up next week.", "Marked as important.", "Came up twice this month.", "Low priority for now.",
          "Raised on the mobile app.", "Shared in the team channel.", "Still open.")


def render(rng: random.Random, topic: Topic, event_type: str) -> str:
    """One text about `topic`, for `event_type`, with its slots filled in from `rng`."""
    template = rng.choice(topic.templates[event_type])
    text = template.format(**{slot: rng.choice(values) for slot, values in topic.slots.items()})
    if rng.random() < 0.4:
        text = f"{text} {rng.choice(ASIDES)}"
    return text[0].upper() + text[1:]
