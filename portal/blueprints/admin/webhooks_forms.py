"""Forms of the console's webhook pages."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField
from wtforms.validators import DataRequired, Length, Optional

from portal.forms import MultiCheckboxField, as_choices
from portal.services.events import TYPES


class WebhookForm(FlaskForm):
    url = StringField(
        _l("Endpoint URL"),
        validators=[DataRequired(_l("Enter the address that receives the events.")), Length(max=2000)],
    )
    description = StringField(_l("Description"), validators=[Optional(), Length(max=200)])
    event_types = MultiCheckboxField(
        _l("Event types (none chosen: every type)"), choices=as_choices((name, name) for name in TYPES)
    )
    enabled = BooleanField(_l("Enabled"), default=True)
