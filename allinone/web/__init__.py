"""The review page and HTTP API of the watch service: sightings, their media, people, enrolment from a sighting."""
