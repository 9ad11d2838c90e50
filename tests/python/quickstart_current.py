# quickstart_legacy.py's flow ported to the current SDK, azure-communication-identity 1.5.0:
# issue_token -> get_token, user.identifier -> user.properties['id'], and expires_on, which 1.5.0
# hands back as the service's ISO 8601 string, parsed before formatting as the original did.
# Same output lines as the original, so the suite checks both programs the same way.
import os
from datetime import datetime
from azure.communication.identity import CommunicationIdentityClient

try:
   print('Azure Communication Services - User Access Tokens Quickstart')

   # This code demonstrates how to fetch your connection string
   # from an environment variable.
   connection_string = os.environ['COMMUNICATION_SERVICES_CONNECTION_STRING']

   # Instantiate the identity client
   client = CommunicationIdentityClient.from_connection_string(connection_string)

   user = client.create_user()
   print("\nCreated a user with ID: " + user.properties['id'] + ":")

   # Issue an access token with the "voip" scope for the new user
   token_result = client.get_token(user, ["voip"])
   expires_on = datetime.fromisoformat(token_result.expires_on).strftime('%d/%m/%y %I:%M %S %p')
   print("\nIssued a token with 'voip' scope that expires at " + expires_on + ":")
   print(token_result.token)

   client.revoke_tokens(user)
   print("\nSuccessfully revoked all tokens for user with ID: " + user.properties['id'])

   client.delete_user(user)
   print("\nDeleted the user with ID: " + user.properties['id'])
except Exception as ex:
   print('Exception:')
   print(ex)
